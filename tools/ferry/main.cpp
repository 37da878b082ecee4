// ferry: list, inspect, remove and garbage-collect IPC objects.
#include <CLI/CLI.hpp>

#include "commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{"ferry: inter-process communication objects on this machine"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "ferry 0.1.0");
  int status = 0;

  ferry::cli::ListOptions list;
  auto* ls = app.add_subcommand("ls", "List ferry objects: name, kind, size, owner, mode, persistence, "
                                      "attached live processes");
  ls->add_flag("--json", list.json, "Print JSON instead of a table");
  ls->add_option("paths", list.file_paths, "File segments to include (they live anywhere on disk)");
  ls->callback([&] { status = ferry::cli::list(list); });

  std::vector<std::string> locators;
  auto* rm = app.add_subcommand("rm", "Remove objects by name (as 'ferry ls' prints them)");
  rm->add_option("names", locators, "orders | file:/path | sysv:0xKEY")->required();
  rm->callback([&] { status = ferry::cli::remove(locators); });

  ferry::cli::GcOptions gc;
  auto* collect = app.add_subcommand(
      "gc", "Remove process-persistent objects whose processes are all dead");
  collect->add_flag("--dry-run,-n", gc.dry_run, "Only report what would be removed");
  collect->add_flag("--json", gc.json, "Print JSON");
  collect->add_option("paths", gc.file_paths, "File segments to consider as well");
  collect->callback([&] { status = ferry::cli::collect_garbage(gc); });

  CLI11_PARSE(app, argc, argv);
  return status;
}
