// `ferry gc`, tested by running the built binary. gc removes every dead process's
// objects on the machine, including those other tests leave for a moment on
// purpose, so these tests run alone (RUN_SERIAL in CMakeLists.txt).
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_support.hpp"
#include "ferry/ferry.hpp"
#include "ferry_test.hpp"

namespace {

using ferry::Mailbox;
using ferry::Segment;
using ferry::test::Child;
using namespace ferry::test::cli;

TEST(CliGc, AStrayDirectoryIsListedWithItsProblemAndRemovedOnceOld) {
  MailboxName box;
  ASSERT_EQ(::mkdir(box.directory().c_str(), 0700), 0);
  const auto objects = list_json();
  const auto* entry = find(objects, box.name);
  ASSERT_NE(entry, nullptr) << objects.dump(2);
  EXPECT_EQ((*entry)["type"], "mailbox");
  EXPECT_NE((*entry)["problem"].get<std::string>().find("not found"), std::string::npos) << entry->dump(2);

  // Just made: it could be a Mailbox::create in progress, so gc leaves it.
  EXPECT_EQ(ferry_cli("gc").status, 0);
  EXPECT_TRUE(exists(box.directory())) << "a fresh directory without control may be a create in progress";
  const timeval long_ago[2] = {{::time(nullptr) - 60, 0}, {::time(nullptr) - 60, 0}};
  ASSERT_EQ(::utimes(box.directory().c_str(), long_ago), 0);

  const CliRun preview = ferry_cli("gc --dry-run");
  EXPECT_NE(preview.output.find("would remove " + box.name + " (mailbox"), std::string::npos) << preview.output;
  EXPECT_TRUE(exists(box.directory()));
  const CliRun run = ferry_cli("gc");
  EXPECT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("removed " + box.name), std::string::npos) << run.output;
  EXPECT_FALSE(exists(box.directory()));
}


TEST(CliGc, RemovesNamesWhoseInboxIsGoneAndKeepsLiveOnes) {
  MailboxName dead, live_target, live;
  ASSERT_EQ(::symlink("ferry.inbox-0000000000000001", dead.directory().c_str()), 0);  // no such inbox
  auto target = Mailbox::create(live_target.name);
  ASSERT_TRUE(target);
  ASSERT_EQ(::symlink(("ferry." + live_target.name).c_str(), live.directory().c_str()), 0);
  const CliRun preview = ferry_cli("gc --dry-run");
  EXPECT_NE(preview.output.find("would remove " + dead.name + " (inbox name"), std::string::npos) << preview.output;
  EXPECT_EQ(preview.output.find(live.name + " (inbox name"), std::string::npos) << preview.output;
  struct stat facts {};
  EXPECT_EQ(::lstat(dead.directory().c_str(), &facts), 0) << "a dry run removes nothing";
  const CliRun run = ferry_cli("gc");
  EXPECT_EQ(run.status, 0) << run.output;
  EXPECT_NE(::lstat(dead.directory().c_str(), &facts), 0) << "the dangling name is gone";
  EXPECT_EQ(::lstat(live.directory().c_str(), &facts), 0) << "a name whose inbox lives stays";
  (void)::unlink(live.directory().c_str());
}

TEST(CliGc, RemovesAMailboxWhoseProcessesAllDied) {
  MailboxName box;
  ferry::test::Event created;
  auto creator = Child::spawn([&] {
    auto mailbox = Mailbox::create(box.name, {.persistence = ferry::Persistence::process});
    FERRY_CHILD_CHECK(mailbox);
    created.signal();
    for (;;) ::pause();
  });
  ASSERT_TRUE(created.wait());
  creator.kill(SIGKILL);
  creator.wait();

  const auto objects = list_json();
  const auto* entry = find(objects, box.name);
  ASSERT_NE(entry, nullptr) << objects.dump(2);
  EXPECT_EQ((*entry)["persistence"], "process");
  EXPECT_NE((*entry)["problem"].get<std::string>().find("died"), std::string::npos) << entry->dump(2);
  EXPECT_TRUE(exists(box.directory() + "/control")) << "ls removes nothing";

  const CliRun preview = ferry_cli("gc --dry-run");
  EXPECT_EQ(preview.status, 0) << preview.output;
  EXPECT_NE(preview.output.find("would remove " + box.name + " (mailbox"), std::string::npos) << preview.output;
  EXPECT_TRUE(exists(box.directory() + "/control"));

  const CliRun run = ferry_cli("gc --json");
  EXPECT_EQ(run.status, 0) << run.output;
  const auto report = nlohmann::json::parse(run.output);
  const auto* removed = find(report["removed"], box.name);
  ASSERT_NE(removed, nullptr) << run.output;
  EXPECT_EQ((*removed)["type"], "mailbox");
  EXPECT_FALSE(exists(box.directory()));
}

TEST(CliGc, RemovesOnlyDeadProcessSegmentsAndReportsThem) {
  const std::string dead = ferry::test::unique_name("gc-dead");
  const std::string alive = ferry::test::unique_name("gc-alive");
  auto dead_holder = Child::exec(FERRY_TEST_PEER, {"create-hold", "posix", dead, "process", "4096"});
  auto live_holder = Child::exec(FERRY_TEST_PEER, {"create-hold", "posix", alive, "process", "4096"});
  wait_until_exists("/dev/shm/ferry." + dead);
  wait_until_exists("/dev/shm/ferry." + alive);
  dead_holder.kill(SIGKILL);
  dead_holder.wait();

  const CliRun preview = ferry_cli("gc --dry-run");
  EXPECT_EQ(preview.status, 0);
  EXPECT_NE(preview.output.find("would remove " + dead), std::string::npos) << preview.output;
  EXPECT_TRUE(exists("/dev/shm/ferry." + dead));

  const CliRun run = ferry_cli("gc --json");
  EXPECT_EQ(run.status, 0) << run.output;
  const auto report = nlohmann::json::parse(run.output);
  EXPECT_EQ(report["dry_run"], false);
  EXPECT_NE(find(report["removed"], dead), nullptr) << run.output;
  EXPECT_EQ(find(report["removed"], alive), nullptr) << run.output;
  EXPECT_FALSE(exists("/dev/shm/ferry." + dead));
  EXPECT_TRUE(exists("/dev/shm/ferry." + alive));

  const CliRun again = ferry_cli("gc");
  EXPECT_EQ(again.status, 0);
  EXPECT_EQ(again.output.find(dead), std::string::npos) << again.output;
  EXPECT_NE(again.output.find("gc: removed"), std::string::npos) << again.output;
  live_holder.kill(SIGKILL);
  live_holder.wait();
  (void)Segment::destroy(alive);
}

}  // namespace
