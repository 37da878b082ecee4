// The ferry command-line tool, tested by running the built binary.
#include <signal.h>
#include <sys/ipc.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <span>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_support.hpp"
#include "ferry/ferry.hpp"
#include "ferry_test.hpp"

namespace {

using ferry::Capacity;
using ferry::Mailbox;
using ferry::Segment;
using ferry::SegmentKind;
using ferry::test::Child;
using namespace ferry::test::cli;

TEST(CliLs, ShowsAPosixSegmentWithEveryColumn) {
  const std::string name = ferry::test::unique_name("ls");
  auto made = Segment::create(name, {.size = 10000, .persistence = ferry::Persistence::process,
                                     .mode = 0640});
  ASSERT_TRUE(made) << made.error().message();

  const auto objects = list_json();
  const auto* entry = find(objects, name);
  ASSERT_NE(entry, nullptr) << objects.dump(2);
  EXPECT_EQ((*entry)["kind"], "posix");
  EXPECT_EQ((*entry)["data_size"], 10000);
  EXPECT_EQ((*entry)["size"], 4096 + 10000);
  EXPECT_EQ((*entry)["owner_uid"], ::geteuid());
  EXPECT_EQ((*entry)["owner"], "root");
  EXPECT_EQ((*entry)["mode"], "0640");
  EXPECT_EQ((*entry)["persistence"], "process");
  EXPECT_EQ((*entry)["type"], "segment");
  EXPECT_EQ((*entry)["creator_pid"], ::getpid());
  EXPECT_EQ((*entry)["attached"], nlohmann::json::array({::getpid()}));

  const CliRun table = ferry_cli("ls");
  EXPECT_EQ(table.status, 0);
  EXPECT_NE(table.output.find("NAME"), std::string::npos);
  const auto line_start = table.output.find(name);
  ASSERT_NE(line_start, std::string::npos) << table.output;
  const std::string line = table.output.substr(line_start, table.output.find('\n', line_start) - line_start);
  EXPECT_NE(line.find("posix"), std::string::npos) << line;
  EXPECT_NE(line.find("0640"), std::string::npos) << line;
  EXPECT_NE(line.find("process"), std::string::npos) << line;
  EXPECT_NE(line.find(std::to_string(::getpid())), std::string::npos) << line;
}

TEST(CliLs, AttachedListsOnlyLiveProcesses) {
  const std::string name = ferry::test::unique_name("attached");
  auto made = Segment::create(name, {.size = 64});
  ASSERT_TRUE(made);
  auto holder = Child::exec(FERRY_TEST_PEER, {"hold", "posix", name});
  pid_t holder_pid = holder.pid();
  nlohmann::json attached;
  for (int i = 0; i < 400; ++i) {
    attached = (*find(list_json(), name))["attached"];
    if (attached.size() == 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(attached, nlohmann::json::array({::getpid(), holder_pid}));
  holder.kill(SIGKILL);
  holder.wait();
  EXPECT_EQ((*find(list_json(), name))["attached"], nlohmann::json::array({::getpid()}));
  (void)Segment::destroy(name);
}

TEST(CliLs, ShowsFileSysvAndMemfdSegments) {
  ferry::test::TempDir dir;
  const std::string file = dir.file("listed.seg");
  auto file_segment = Segment::create(file, {.kind = SegmentKind::file, .size = 64});
  ASSERT_TRUE(file_segment);
  const std::string key_path = dir.file("key");
  std::ofstream(key_path) << "key";
  auto sysv_segment = Segment::create(key_path, {.kind = SegmentKind::sysv, .size = 64});
  ASSERT_TRUE(sysv_segment) << sysv_segment.error().message();
  const std::string label = ferry::test::unique_name("memfd");
  auto memfd_segment = Segment::create(label, {.kind = SegmentKind::memfd, .size = 64});
  ASSERT_TRUE(memfd_segment);

  const auto objects = list_json(file);
  const auto* file_entry = find(objects, "file:" + file);
  ASSERT_NE(file_entry, nullptr) << objects.dump(2);
  EXPECT_EQ((*file_entry)["persistence"], "filesystem");

  char key_text[32];
  std::snprintf(key_text, sizeof key_text, "sysv:0x%08x",
                static_cast<unsigned>(::ftok(key_path.c_str(), 1)));
  const auto* sysv_entry = find(objects, key_text);
  ASSERT_NE(sysv_entry, nullptr) << key_text << "\n" << objects.dump(2);
  EXPECT_EQ((*sysv_entry)["kind"], "sysv");
  EXPECT_EQ((*sysv_entry)["attached"], nlohmann::json::array({::getpid()}));

  const auto* memfd_entry = find(objects, "memfd:" + label);
  ASSERT_NE(memfd_entry, nullptr) << objects.dump(2);
  EXPECT_EQ((*memfd_entry)["persistence"], "process");
  EXPECT_EQ((*memfd_entry)["attached"], nlohmann::json::array({::getpid()}));
  (void)Segment::destroy(key_path, SegmentKind::sysv);
}

TEST(CliLs, CorruptObjectIsListedWithItsProblem) {
  const std::string name = ferry::test::unique_name("corrupt");
  std::ofstream("/dev/shm/ferry." + name) << std::string(5000, 'x');
  const auto objects = list_json();
  const auto* entry = find(objects, name);
  ASSERT_NE(entry, nullptr);
  EXPECT_NE((*entry)["problem"].get<std::string>().find("corrupt"), std::string::npos);
  EXPECT_FALSE(entry->contains("persistence"));
  ::unlink(("/dev/shm/ferry." + name).c_str());
}

TEST(CliLs, ShowsAMutexOwnerAndWhetherItIsAlive) {
  const std::string name = ferry::test::unique_name("mutex");
  auto mutex = ferry::Named<ferry::Mutex>::create(name);
  ASSERT_TRUE(mutex) << mutex.error().message();
  const std::string semaphore_name = ferry::test::unique_name("semaphore");
  auto semaphore = ferry::Named<ferry::Semaphore>::create(semaphore_name, {}, 3u, 9u);
  ASSERT_TRUE(semaphore);

  auto free_objects = list_json();
  const auto* free_entry = find(free_objects, name);
  ASSERT_NE(free_entry, nullptr);
  EXPECT_EQ((*free_entry)["type"], "mutex");
  EXPECT_EQ((*free_entry)["details"]["owner"], "none");
  const auto* semaphore_entry = find(free_objects, semaphore_name);
  ASSERT_NE(semaphore_entry, nullptr);
  EXPECT_EQ((*semaphore_entry)["details"]["value"], "3");
  EXPECT_EQ((*semaphore_entry)["details"]["maximum"], "9");

  auto holder = Child::exec(FERRY_TEST_PEER, {"lock-hold", name});
  const std::string holder_pid = std::to_string(holder.pid());
  nlohmann::json details;
  for (int i = 0; i < 2000; ++i) {
    const auto objects = list_json();
    details = (*find(objects, name))["details"];
    if (details.contains("owner_pid")) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(details["owner_pid"], holder_pid) << details.dump();
  EXPECT_EQ(details["owner_alive"], "yes");
  EXPECT_EQ(details["state"], "consistent");

  holder.kill(SIGKILL);
  holder.wait();
  const auto after = list_json();
  const auto* dead_entry = find(after, name);
  ASSERT_NE(dead_entry, nullptr);
  EXPECT_EQ((*dead_entry)["details"]["owner_pid"], holder_pid);
  EXPECT_EQ((*dead_entry)["details"]["owner_alive"], "no");

  const CliRun table = ferry_cli("ls");
  const auto line_start = table.output.find(name);
  ASSERT_NE(line_start, std::string::npos);
  const std::string line = table.output.substr(line_start, table.output.find('\n', line_start) - line_start);
  EXPECT_NE(line.find("owner_pid=" + holder_pid), std::string::npos) << line;
  EXPECT_NE(line.find("owner_alive=no"), std::string::npos) << line;
  EXPECT_EQ((*mutex)->lock().error().code(), ferry::errc::owner_died);
  ASSERT_TRUE((*mutex)->mark_consistent());
  ASSERT_TRUE((*mutex)->unlock());
  (void)Segment::destroy(name);
  (void)Segment::destroy(semaphore_name);
}

TEST(CliLs, ShowsAChannelWithItsQueueAndPeers) {
  const std::string name = ferry::test::unique_name("channel");
  auto channel = ferry::Channel::create(name, {.capacity = 4096, .max_message = 100});
  ASSERT_TRUE(channel) << channel.error().message();
  auto tx = channel->sender();
  ASSERT_TRUE(tx);
  const std::vector<std::byte> message(40);
  ASSERT_TRUE(tx->send(message));
  ASSERT_TRUE(tx->send(message));
  const auto objects = list_json();
  const auto* entry = find(objects, name);
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ((*entry)["type"], "channel");
  const auto& details = (*entry)["details"];
  EXPECT_EQ(details["capacity"], "4096");
  EXPECT_EQ(details["max_message"], "100");
  EXPECT_EQ(details["queued_messages"], "2");
  EXPECT_EQ(details["queued_bytes"], "128") << "two records of a cache line each";
  EXPECT_EQ(details["sender_pid"], std::to_string(::getpid()));
  EXPECT_EQ(details["sender_alive"], "yes");
  EXPECT_EQ(details["receiver"], "none");
  (void)Segment::destroy(name);
}

TEST(CliLs, ShowsAMailboxOnceWithItsQueue) {
  MailboxName box;
  auto mailbox = Mailbox::create(box.name, {.capacity = Capacity::bounded(16, 200)});
  ASSERT_TRUE(mailbox) << mailbox.error().message();
  const std::string message = "order";
  ASSERT_TRUE(mailbox->send(std::as_bytes(std::span(message))));
  ASSERT_TRUE(mailbox->send(std::as_bytes(std::span(message)), {.priority = 3}));

  const auto objects = list_json();
  std::size_t mentions = 0;
  for (const auto& object : objects) {
    mentions += object["name"].get<std::string>().find(box.name) != std::string::npos ? 1 : 0;
  }
  EXPECT_EQ(mentions, 1u) << "the directory's files are not objects of their own\n" << objects.dump(2);
  const auto* entry = find(objects, box.name);
  ASSERT_NE(entry, nullptr) << objects.dump(2);
  EXPECT_EQ((*entry)["type"], "mailbox");
  EXPECT_EQ((*entry)["persistence"], "kernel");
  EXPECT_EQ((*entry)["mode"], "0600");
  EXPECT_EQ((*entry)["owner_uid"], ::geteuid());
  EXPECT_EQ((*entry)["creator_pid"], ::getpid());
  EXPECT_EQ((*entry)["attached"], nlohmann::json::array({::getpid()}));
  EXPECT_FALSE(entry->contains("problem")) << entry->dump(2);
  const auto& details = (*entry)["details"];
  EXPECT_EQ(details["capacity"], "bounded(16)");
  EXPECT_EQ(details["max_message"], "200");
  EXPECT_EQ(details["queued"], "2");
  EXPECT_EQ(details["leased"], "0");
  EXPECT_EQ(details["sent"], "2");
  EXPECT_EQ(details["received"], "0");
  EXPECT_EQ(details["high_water"], "2");
  EXPECT_EQ(details["senders"], "1");

  const CliRun table = ferry_cli("ls");
  EXPECT_EQ(table.status, 0);
  const auto line_start = table.output.find(box.name);
  ASSERT_NE(line_start, std::string::npos) << table.output;
  const std::string line = table.output.substr(line_start, table.output.find('\n', line_start) - line_start);
  EXPECT_NE(line.find("mailbox"), std::string::npos) << line;
  EXPECT_NE(line.find("queued=2"), std::string::npos) << line;
  EXPECT_EQ(table.output.find(box.name, line_start + 1), std::string::npos) << table.output;
}

TEST(CliLs, AFileSystemMailboxIsListedStatedAndRemovedByItsPath) {
  ferry::test::TempDir dir;
  const std::string path = dir.file("orders");
  auto created = Mailbox::create(path, {.persistence = ferry::Persistence::filesystem});
  ASSERT_TRUE(created) << created.error().message();
  std::optional<Mailbox> mailbox(std::move(*created));
  ASSERT_TRUE(mailbox->send(std::as_bytes(std::span("kept", 4))));

  const auto objects = list_json(path);
  const auto* entry = find(objects, path);
  ASSERT_NE(entry, nullptr) << objects.dump(2);
  EXPECT_EQ((*entry)["type"], "mailbox");
  EXPECT_EQ((*entry)["kind"], "file");
  EXPECT_EQ((*entry)["persistence"], "filesystem");
  EXPECT_EQ((*entry)["details"]["sent"], "1");

  const CliRun stat = ferry_cli("stat " + path);
  EXPECT_EQ(stat.status, 0) << stat.output;
  EXPECT_NE(stat.output.find("queued       1"), std::string::npos) << stat.output;

  mailbox.reset();
  const CliRun removed = ferry_cli("rm " + path);
  EXPECT_EQ(removed.status, 0) << removed.output;
  EXPECT_FALSE(exists(path));
}

TEST(CliStat, ShowsCapacityQueuesCountersSendersAndReceivers) {
  MailboxName box;
  auto mailbox = Mailbox::create(box.name, {.capacity = Capacity::bounded(8, 100), .mode = 0640});
  ASSERT_TRUE(mailbox) << mailbox.error().message();
  const std::string message = "x";
  ASSERT_TRUE(mailbox->send(std::as_bytes(std::span(message)), {.priority = 5}));
  ASSERT_TRUE(mailbox->send(std::as_bytes(std::span(message)), {.priority = 5}));
  ASSERT_TRUE(mailbox->send(std::as_bytes(std::span(message)), {.urgent = true}));
  ASSERT_TRUE(mailbox->receive_leased());  // nacked when dropped: redelivered
  ASSERT_TRUE(mailbox->send(std::as_bytes(std::span(message))));  // no receiver has sorted it yet

  const CliRun run = ferry_cli("stat --json " + box.name);
  ASSERT_EQ(run.status, 0) << run.output;
  const auto stats = nlohmann::json::parse(run.output);
  EXPECT_EQ(stats["name"], box.name);
  EXPECT_EQ(stats["capacity"], nlohmann::json({{"kind", "bounded"}, {"count", 8}, {"max_message", 100},
                                                {"memory_limit", 0}}));
  EXPECT_EQ(stats["mode"], "0640");
  EXPECT_EQ(stats["owner_uid"], ::geteuid());
  EXPECT_EQ(stats["owner"], "root");
  EXPECT_EQ(stats["queued"], 4);
  EXPECT_EQ(stats["queued_by_priority"], nlohmann::json({{"5", 2}, {"urgent", 1}}));
  EXPECT_EQ(stats["queued_unsorted"], 1);
  EXPECT_EQ(stats["leased"], 0);
  EXPECT_EQ(stats["high_water"], 4);
  EXPECT_EQ(stats["sent"], 4);
  EXPECT_EQ(stats["received"], 0);
  EXPECT_EQ(stats["redelivered"], 1);
  EXPECT_EQ(stats["flushed"], 0);
  EXPECT_EQ(stats["senders"], nlohmann::json::array({{{"pid", ::getpid()}, {"uid", ::geteuid()}, {"alive", true}}}));
  EXPECT_EQ(stats["receivers"], nlohmann::json::array({{{"pid", ::getpid()}, {"uid", ::geteuid()}, {"alive", true}}}));

  const CliRun table = ferry_cli("stat " + box.name);
  EXPECT_EQ(table.status, 0);
  EXPECT_NE(table.output.find("bounded(8), messages of at most 100 bytes"), std::string::npos) << table.output;
  EXPECT_NE(table.output.find("4 (urgent: 1, priority 5: 2, not yet sorted: 1)"), std::string::npos) << table.output;
  EXPECT_NE(table.output.find("pid " + std::to_string(::getpid())), std::string::npos) << table.output;
  EXPECT_NE(table.output.find("receivers    1 (1 alive)"), std::string::npos) << table.output;
}

TEST(CliStat, AMissingMailboxIsAnErrorNamingIt) {
  const std::string name = ferry::test::unique_name("missing");
  const CliRun run = ferry_cli("stat " + name);
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.output.find("ferry stat: mailbox '" + name + "': not found"), std::string::npos) << run.output;
  EXPECT_EQ(ferry_cli("send " + name + " hello").status, 1);
  EXPECT_EQ(ferry_cli("recv " + name).status, 1);
}

TEST(CliSend, ArgumentsAndStdinLinesArriveUrgentFirstThenByPriority) {
  MailboxName box;
  ASSERT_TRUE(Mailbox::create(box.name));
  const CliRun arguments = ferry_cli("send --json " + box.name + " one 'two words'");
  EXPECT_EQ(arguments.status, 0) << arguments.output;
  EXPECT_EQ(nlohmann::json::parse(arguments.output), nlohmann::json({{"sent", 2}}));
  const CliRun lines = ferry_cli_with_input("send --priority 9 " + box.name, "three\nfour");
  EXPECT_EQ(lines.status, 0) << lines.output;
  EXPECT_NE(lines.output.find("sent 2 messages"), std::string::npos) << lines.output;
  EXPECT_EQ(ferry_cli("send --urgent " + box.name + " now").status, 0);
  EXPECT_NE(ferry_cli("send --priority 32 " + box.name + " never").status, 0);

  const CliRun first = ferry_cli("recv --count 3 --json " + box.name);
  EXPECT_EQ(first.status, 0) << first.output;
  const auto received = json_lines(first.output);
  ASSERT_EQ(received.size(), 3u) << first.output;
  EXPECT_EQ(received[0]["data"], "now");
  EXPECT_EQ(received[0]["urgent"], true);
  EXPECT_EQ(received[1]["data"], "three");
  EXPECT_EQ(received[1]["priority"], 9);
  EXPECT_EQ(received[1]["urgent"], false);
  EXPECT_EQ(received[2]["data"], "four");
  EXPECT_EQ(received[2]["sequence"], 2) << "the second message of that ferry send";
  EXPECT_EQ(received[2]["delivery_count"], 1);
  EXPECT_EQ(received[2]["sender"]["uid"], ::geteuid());
  EXPECT_EQ(received[2]["sender"]["gid"], ::getegid());
  EXPECT_GT(received[2]["sender"]["pid"].get<int>(), 0);
  EXPECT_TRUE(received[2]["sender"].contains("pid_attested"));

  const CliRun rest = ferry_cli("recv --count 0 " + box.name);
  EXPECT_EQ(rest.status, 0) << rest.output;
  EXPECT_EQ(rest.output, "one\ntwo words\n");
}

TEST(CliRecv, BytesThatAreNotUtf8KeepTheirExactValueInJson) {
  MailboxName box;
  auto mailbox = Mailbox::create(box.name);
  ASSERT_TRUE(mailbox);
  const std::string bytes = "a\xff\x01";
  ASSERT_TRUE(mailbox->send(std::as_bytes(std::span(bytes))));
  const CliRun run = ferry_cli("recv --json " + box.name);
  EXPECT_EQ(run.status, 0) << run.output;
  const auto received = json_lines(run.output);
  ASSERT_EQ(received.size(), 1u) << run.output;
  EXPECT_EQ(received[0]["data"], "a\xef\xbf\xbd\x01");
  EXPECT_EQ(received[0]["data_base64"], "Yf8B");
}

TEST(CliRecv, TimesOutAfterPrintingWhatArrived) {
  MailboxName box;
  auto mailbox = Mailbox::create(box.name);
  ASSERT_TRUE(mailbox);
  const CliRun empty = ferry_cli("recv --timeout 0.2 " + box.name);
  EXPECT_EQ(empty.status, 1);
  EXPECT_NE(empty.output.find("timed out"), std::string::npos) << empty.output;

  const std::string message = "only";
  ASSERT_TRUE(mailbox->send(std::as_bytes(std::span(message))));
  const CliRun partial = ferry_cli("recv --count 2 --timeout 0.2 " + box.name);
  EXPECT_EQ(partial.status, 1);
  EXPECT_EQ(partial.output.find("only\n"), 0u) << partial.output;
  EXPECT_NE(partial.output.find("timed out"), std::string::npos) << partial.output;
  EXPECT_NE(partial.output.find("1 of 2 received"), std::string::npos) << partial.output;

  ASSERT_TRUE(mailbox->send(std::as_bytes(std::span(message))));
  const CliRun until_quiet = ferry_cli("recv --count 0 --timeout 0.2 " + box.name);
  EXPECT_EQ(until_quiet.status, 0) << until_quiet.output;
  EXPECT_EQ(until_quiet.output, "only\n");
}

TEST(CliSend, AFullMailboxTimesOut) {
  MailboxName box;
  ASSERT_TRUE(Mailbox::create(box.name, {.capacity = Capacity::bounded(1)}));
  EXPECT_EQ(ferry_cli("send " + box.name + " first").status, 0);
  const CliRun run = ferry_cli("send --timeout 0.2 --json " + box.name + " second");
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.output.find("full"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("timed out"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("{\"sent\":0}"), std::string::npos) << run.output;
  EXPECT_EQ(ferry_cli("recv --count 0 " + box.name).output, "first\n");
}

TEST(CliRm, RemovesByNameAndReportsWhatItCannot) {
  const std::string name = ferry::test::unique_name("rm");
  {
    auto made = Segment::create(name, {.size = 64});
    ASSERT_TRUE(made);
  }
  ASSERT_TRUE(exists("/dev/shm/ferry." + name));
  const CliRun removed = ferry_cli("rm " + name);
  EXPECT_EQ(removed.status, 0) << removed.output;
  EXPECT_FALSE(exists("/dev/shm/ferry." + name));

  const CliRun missing = ferry_cli("rm " + name);
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.output.find("posix segment '" + name + "': not found"), std::string::npos)
      << missing.output;
  const CliRun memfd = ferry_cli("rm memfd:whatever");
  EXPECT_EQ(memfd.status, 1);
  EXPECT_NE(memfd.output.find("no name to remove"), std::string::npos) << memfd.output;
  const CliRun bad_key = ferry_cli("rm sysv:banana");
  EXPECT_EQ(bad_key.status, 1);
  EXPECT_NE(bad_key.output.find("invalid argument"), std::string::npos) << bad_key.output;
  EXPECT_NE(ferry_cli("rm").status, 0) << "a name is required";
}

TEST(CliRm, RemovesFileAndSysvSegments) {
  ferry::test::TempDir dir;
  const std::string file = dir.file("gone.seg");
  const std::string key_path = dir.file("key");
  std::ofstream(key_path) << "key";
  {
    auto file_segment = Segment::create(file, {.kind = SegmentKind::file, .size = 64});
    auto sysv_segment = Segment::create(key_path, {.kind = SegmentKind::sysv, .size = 64});
    ASSERT_TRUE(file_segment && sysv_segment);
  }
  char key_text[32];
  std::snprintf(key_text, sizeof key_text, "sysv:0x%08x",
                static_cast<unsigned>(::ftok(key_path.c_str(), 1)));
  const CliRun run = ferry_cli("rm file:" + file + " " + key_text);
  EXPECT_EQ(run.status, 0) << run.output;
  EXPECT_FALSE(exists(file));
  EXPECT_EQ(Segment::open(key_path, {.kind = SegmentKind::sysv}).error().code(), ferry::errc::not_found);
}

TEST(CliRm, RemovesAMailbox) {
  MailboxName box;
  ASSERT_TRUE(Mailbox::create(box.name));
  ASSERT_TRUE(exists(box.directory() + "/control"));
  const CliRun run = ferry_cli("rm " + box.name);
  EXPECT_EQ(run.status, 0) << run.output;
  EXPECT_FALSE(exists(box.directory()));
  const CliRun again = ferry_cli("rm " + box.name);
  EXPECT_EQ(again.status, 1) << again.output;
}

// Removes an object with `Object::destroy` at the end of a test, so that its
// chunks do not outlive the test should the CLI fail to remove them.
template <class Object>
struct DestroyedAtEnd {
  std::string name;
  ~DestroyedAtEnd() { (void)Object::destroy(name); }
};

// `ferry rm LOCATOR` of a channel or topic that has lent a chunk: its backing
// object and its first slab of chunks are both gone after it.
void expect_removed_with_its_chunks(const std::string& locator, const std::string& backing) {
  const std::string slab = backing + ".chunks-0-1";
  ASSERT_TRUE(exists(slab)) << "a loan of 100,000 bytes makes the first slab";
  const CliRun run = ferry_cli("rm " + locator);
  EXPECT_EQ(run.status, 0) << run.output;
  EXPECT_FALSE(exists(backing));
  EXPECT_FALSE(exists(slab)) << "the chunks go with their " << locator;
}

TEST(CliRm, RemovesAChannelWithItsLoanChunks) {
  const DestroyedAtEnd<ferry::Channel> channel_name{ferry::test::unique_name("channel")};
  auto channel = ferry::Channel::create(channel_name.name);
  ASSERT_TRUE(channel) << channel.error().message();
  auto tx = channel->sender();
  ASSERT_TRUE(tx);
  auto loan = tx->loan(100'000);
  ASSERT_TRUE(loan) << loan.error().message();
  expect_removed_with_its_chunks(channel_name.name, "/dev/shm/ferry." + channel_name.name);
}

TEST(CliRm, RemovesATopicWithItsLoanChunks) {
  const DestroyedAtEnd<ferry::Topic> topic_name{ferry::test::unique_name("topic")};
  auto topic = ferry::Topic::create(topic_name.name);
  ASSERT_TRUE(topic) << topic.error().message();
  auto publisher = topic->publisher();
  ASSERT_TRUE(publisher) << publisher.error().message();
  auto loan = publisher->loan(100'000);
  ASSERT_TRUE(loan) << loan.error().message();
  expect_removed_with_its_chunks(topic_name.name, "/dev/shm/ferry." + topic_name.name);
}

// A file-backed channel's chunks live beside its file and go with it too.
TEST(CliRm, RemovesAFileBackedChannelWithItsLoanChunks) {
  ferry::test::TempDir directory;
  const std::string path = directory.file("channel");
  auto channel = ferry::Channel::create(path, {.kind = ferry::SegmentKind::file});
  ASSERT_TRUE(channel) << channel.error().message();
  auto tx = channel->sender();
  ASSERT_TRUE(tx);
  auto loan = tx->loan(100'000);
  ASSERT_TRUE(loan) << loan.error().message();
  expect_removed_with_its_chunks(path, path);
}

TEST(Cli, UnknownCommandIsAUsageError) {
  const CliRun run = ferry_cli("frobnicate");
  EXPECT_NE(run.status, 0);
  EXPECT_NE(ferry_cli("--version").output.find("ferry 0.1.0"), std::string::npos);
}

}  // namespace
