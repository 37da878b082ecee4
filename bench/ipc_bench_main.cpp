// ferry_ipc_bench: the transport benchmark on its own; the same as `ferry bench`.
#include <CLI/CLI.hpp>

#include "ipc_bench.hpp"

int main(int argc, char** argv) {
  CLI::App app{"ferry_ipc_bench: IPC transports side by side (the same as `ferry bench`)"};
  ferry::bench::Options options;
  ferry::bench::add_options(app, options);
  CLI11_PARSE(app, argc, argv);
  return ferry::bench::run_command(options);
}
