// Segments between real processes: forked and exec'd children, SIGKILL,
// and a second user (tests run as root and drop to uid 65534 in children).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "ferry/ferry.hpp"
#include "ferry_test.hpp"

namespace {

using ferry::errc;
using ferry::OpenOptions;
using ferry::Persistence;
using ferry::Segment;
using ferry::SegmentKind;
using ferry::test::Child;
using ferry::test::Event;

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// A name for each kind, in a directory the second user can also write.
struct KindNames {
  explicit KindNames(SegmentKind which) : kind(which), dir(01777) {
    switch (kind) {
      case SegmentKind::posix:
      case SegmentKind::memfd: name = ferry::test::unique_name(); break;
      case SegmentKind::file: name = dir.file("segment"); break;
      case SegmentKind::sysv:
        name = dir.file("key");
        std::ofstream(name) << "key";
        ::chmod(name.c_str(), 0644);
        break;
    }
  }
  ~KindNames() {
    if (kind != SegmentKind::memfd) (void)Segment::destroy(name, kind);
  }
  // Whether the object is still reachable by its name.
  bool named() const {
    if (kind == SegmentKind::posix) return exists("/dev/shm/ferry." + name);
    if (kind == SegmentKind::file) return exists(name);
    auto opened = Segment::open(name, {.kind = kind, .access = ferry::Access::read_only});
    return opened || opened.error().code() != errc::not_found;
  }
  SegmentKind kind;
  ferry::test::TempDir dir;
  std::string name;
};

class SegmentAcrossProcesses : public ::testing::TestWithParam<SegmentKind> {};
// Kinds with a name (memfds have none: the kernel frees them with the last descriptor).
class NamedSegmentAcrossProcesses : public SegmentAcrossProcesses {};
// Kinds that can have kernel persistence.
class KernelSegmentAcrossProcesses : public SegmentAcrossProcesses {};

TEST_P(SegmentAcrossProcesses, ForkedChildMapsAndReadsWhatTheParentWrote) {
  KindNames names(GetParam());
  auto made = Segment::create(names.name, {.kind = GetParam(), .size = 1 << 16});
  ASSERT_TRUE(made) << made.error().message();
  std::memcpy(made->data().data(), "from the parent", 15);
  const int memfd = made->fd().get();

  auto child = Child::spawn([&] {
    auto opened = GetParam() == SegmentKind::memfd ? Segment::attach(*ferry::Fd(memfd).duplicate())
                                                   : Segment::open(names.name, {.kind = GetParam()});
    FERRY_CHILD_CHECK(opened);
    FERRY_CHILD_CHECK(std::memcmp(opened->data().data(), "from the parent", 15) == 0);
    std::memcpy(opened->data().data() + 100, "child was here", 14);
    return 0;
  });
  ASSERT_EQ(child.wait(), 0);
  EXPECT_EQ(std::memcmp(made->data().data() + 100, "child was here", 14), 0);
}

TEST_P(SegmentAcrossProcesses, ExecedPeerMapsReadsAndReplies) {
  KindNames names(GetParam());
  auto made = Segment::create(names.name, {.kind = GetParam(), .size = 1 << 16});
  ASSERT_TRUE(made) << made.error().message();
  std::memcpy(made->data().data(), "exec me", 7);
  const std::string kind(ferry::to_string(GetParam()));
  if (GetParam() == SegmentKind::memfd) {
    auto inheritable = made->fd().dup_inheritable(40);
    ASSERT_TRUE(inheritable);
    auto peer = Child::exec(FERRY_TEST_PEER, {"read-fd", std::to_string(inheritable->get()), "exec me"});
    EXPECT_EQ(peer.wait(), 0);
    return;
  }
  EXPECT_EQ(Child::exec(FERRY_TEST_PEER, {"read", kind, names.name, "exec me"}).wait(), 0);
  EXPECT_EQ(Child::exec(FERRY_TEST_PEER, {"read", kind, names.name, "something else"}).wait(), 4)
      << "the peer really compares";
  EXPECT_EQ(Child::exec(FERRY_TEST_PEER, {"reply", kind, names.name, "peer reply"}).wait(), 0);
  EXPECT_EQ(std::memcmp(made->data().data() + 4096, "peer reply", 10), 0);
}

TEST_P(NamedSegmentAcrossProcesses, ProcessPersistenceEndsWithTheLastProcess) {
  KindNames names(GetParam());
  Event opened, release;
  auto made = Segment::create(names.name, {.kind = GetParam(), .size = 4096,
                                           .persistence = Persistence::process});
  ASSERT_TRUE(made) << made.error().message();
  auto child = Child::spawn([&] {
    auto mine = Segment::open(names.name, {.kind = GetParam()});
    FERRY_CHILD_CHECK(mine);
    opened.signal();
    FERRY_CHILD_CHECK(release.wait());
    return 0;  // detaches on the way out: the last one
  });
  ASSERT_TRUE(opened.wait());
  ASSERT_TRUE(made->detach());
  EXPECT_TRUE(names.named()) << "the child still has it";
  release.signal();
  ASSERT_EQ(child.wait(), 0);
  EXPECT_FALSE(names.named()) << "the last process detached";
  EXPECT_EQ(Segment::open(names.name, {.kind = GetParam()}).error().code(), errc::not_found);
}

TEST_P(NamedSegmentAcrossProcesses, ProcessPersistenceEndsWhenTheLastProcessIsSigkilled) {
  KindNames names(GetParam());
  Event opened;
  auto made = Segment::create(names.name, {.kind = GetParam(), .size = 4096,
                                           .persistence = Persistence::process});
  ASSERT_TRUE(made) << made.error().message();
  auto child = Child::spawn([&] {
    auto mine = Segment::open(names.name, {.kind = GetParam()});
    FERRY_CHILD_CHECK(mine);
    opened.signal();
    for (;;) ::pause();
    return 0;
  });
  ASSERT_TRUE(opened.wait());
  ASSERT_TRUE(made->detach());
  EXPECT_TRUE(names.named());
  child.kill(SIGKILL);
  EXPECT_EQ(child.wait(), 128 + SIGKILL);
  // The kernel cannot tell ferry; the next attach finds out and finishes the removal.
  auto late = Segment::open(names.name, {.kind = GetParam()});
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code(), errc::not_found) << late.error().message();
  EXPECT_FALSE(names.named());
  // And the name is free for a new segment.
  EXPECT_TRUE(Segment::create(names.name, {.kind = GetParam(), .size = 64}));
}

TEST_P(NamedSegmentAcrossProcesses, StaleProcessSegmentIsReplacedOnCreate) {
  KindNames names(GetParam());
  const std::string kind(ferry::to_string(GetParam()));
  auto holder = Child::exec(FERRY_TEST_PEER, {"create-hold", kind, names.name, "process", "4096"});
  for (int i = 0; i < 2000 && !names.named(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(names.named());
  EXPECT_EQ(Segment::create(names.name, {.kind = GetParam(), .size = 64}).error().code(),
            errc::already_exists)
      << "in use by a live process";
  holder.kill(SIGKILL);
  holder.wait();
  auto fresh = Segment::create(names.name, {.kind = GetParam(), .size = 64});
  EXPECT_TRUE(fresh) << fresh.error().message();
}

TEST_P(KernelSegmentAcrossProcesses, KernelPersistenceOutlivesEveryProcess) {
  KindNames names(GetParam());
  auto child = Child::spawn([&] {
    auto made = Segment::create(names.name, {.kind = GetParam(), .size = 4096,
                                             .persistence = Persistence::kernel});
    FERRY_CHILD_CHECK(made);
    std::memcpy(made->data().data(), "still here", 10);
    return 0;
  });
  ASSERT_EQ(child.wait(), 0);
  auto opened = Segment::open(names.name, {.kind = GetParam()});
  ASSERT_TRUE(opened) << opened.error().message();
  EXPECT_EQ(std::memcmp(opened->data().data(), "still here", 10), 0);
  ASSERT_TRUE(opened->detach());
  EXPECT_TRUE(names.named());
}

TEST_P(SegmentAcrossProcesses, SecondUserCannotOpenA0600Segment) {
  KindNames names(GetParam());
  auto made = Segment::create(names.name, {.kind = GetParam(), .size = 4096});
  ASSERT_TRUE(made) << made.error().message();
  const int memfd_number = made->fd().get();
  auto child = Child::spawn([&] {
    ferry::test::become_other_user();
    if (GetParam() == SegmentKind::memfd) {
      // The descriptor was inherited, but re-opening the memfd goes through its mode.
      const std::string path = "/proc/" + std::to_string(::getppid()) + "/fd/" + std::to_string(memfd_number);
      const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
      FERRY_CHILD_CHECK(fd < 0);
      return 0;
    }
    for (auto access : {ferry::Access::read_write, ferry::Access::read_only}) {
      auto opened = Segment::open(names.name, {.kind = GetParam(), .access = access,
                                               .allow_foreign_owner = true});
      FERRY_CHILD_CHECK(!opened);
      FERRY_CHILD_CHECK(opened.error().code() == errc::permission_denied);
      FERRY_CHILD_CHECK(opened.error().message().find(names.name) != std::string::npos);
    }
    return 0;
  });
  EXPECT_EQ(child.wait(), 0);
}

TEST_P(NamedSegmentAcrossProcesses, NamePreCreatedByAnotherUserIsRefused) {
  KindNames names(GetParam());
  auto child = Child::spawn([&] {
    ferry::test::become_other_user();
    auto planted = Segment::create(names.name, {.kind = GetParam(), .size = 4096, .mode = 0666});
    FERRY_CHILD_CHECK(planted);
    std::memcpy(planted->data().data(), "trap", 4);
    return 0;
  });
  ASSERT_EQ(child.wait(), 0);

  auto created = Segment::create(names.name, {.kind = GetParam(), .size = 4096});
  ASSERT_FALSE(created) << "create fails closed";
  EXPECT_EQ(created.error().code(), errc::already_exists);
  EXPECT_NE(created.error().message().find("owned by uid 65534"), std::string::npos)
      << created.error().message();
  auto opened = Segment::open(names.name, {.kind = GetParam()});
  ASSERT_FALSE(opened) << "open refuses a foreign owner";
  EXPECT_EQ(opened.error().code(), errc::permission_denied);
  EXPECT_NE(opened.error().message().find("owned by uid 65534"), std::string::npos)
      << opened.error().message();
  auto trusted = Segment::open(names.name, {.kind = GetParam(), .allow_foreign_owner = true});
  ASSERT_TRUE(trusted) << trusted.error().message();
  EXPECT_EQ(std::memcmp(trusted->data().data(), "trap", 4), 0);
}

INSTANTIATE_TEST_SUITE_P(AllKinds, SegmentAcrossProcesses,
                         ::testing::Values(SegmentKind::posix, SegmentKind::file,
                                           SegmentKind::memfd, SegmentKind::sysv),
                         ferry::test::kind_name);
INSTANTIATE_TEST_SUITE_P(Named, NamedSegmentAcrossProcesses,
                         ::testing::Values(SegmentKind::posix, SegmentKind::file, SegmentKind::sysv),
                         ferry::test::kind_name);
INSTANTIATE_TEST_SUITE_P(Kernel, KernelSegmentAcrossProcesses,
                         ::testing::Values(SegmentKind::posix, SegmentKind::sysv),
                         ferry::test::kind_name);

TEST(SegmentFileAcrossProcesses, BytesAreInTheFileAfterEveryProcessUnmapped) {
  ferry::test::TempDir dir;
  const std::string path = dir.file("durable.seg");
  {
    auto made = Segment::create(path, {.kind = SegmentKind::file, .size = 8192});
    ASSERT_TRUE(made) << made.error().message();
  }
  auto writer = Child::spawn([&] {
    auto opened = Segment::open(path, {.kind = SegmentKind::file});
    FERRY_CHILD_CHECK(opened);
    std::memcpy(opened->data().data() + 5000, "durable bytes", 13);
    return 0;
  });
  ASSERT_EQ(writer.wait(), 0);
  const std::string contents = ferry::test::read_file(path);
  ASSERT_EQ(contents.size(), 4096u + 8192u);
  EXPECT_EQ(contents.substr(4096 + 5000, 13), "durable bytes");
}

TEST(SegmentFileAcrossProcesses, ProcessPersistentFileIsDeletedAfterSigkill) {
  ferry::test::TempDir dir;
  const std::string path = dir.file("scratch.seg");
  auto holder = Child::exec(FERRY_TEST_PEER, {"create-hold", "file", path, "process", "4096"});
  for (int i = 0; i < 2000 && !exists(path); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(exists(path));
  holder.kill(SIGKILL);
  holder.wait();
  const std::vector<std::string> paths{path};
  const auto removed = ferry::collect_garbage(paths);
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0].locator, "file:" + path);
  EXPECT_FALSE(exists(path));
}

// Many processes attach and detach a process-persistent segment at once
// while a holder keeps it: it must never vanish under anyone, and must go
// once the holder leaves.
TEST(SegmentLifecycleTorture, ConcurrentAttachDetachNeverLosesALiveSegment) {
  const std::string name = ferry::test::unique_name("torture");
  auto holder = Segment::create(name, {.size = 4096, .persistence = Persistence::process,
                                       .max_attachments = 16});
  ASSERT_TRUE(holder) << holder.error().message();
  const std::size_t rounds = ferry::test::scaled(300);
  std::vector<Child> workers;
  for (int w = 0; w < 4; ++w) {
    workers.push_back(Child::spawn([&] {
      for (std::size_t i = 0; i < rounds; ++i) {
        auto opened = Segment::open(name);
        FERRY_CHILD_CHECK(opened);
        auto* counter = reinterpret_cast<std::atomic<std::uint64_t>*>(opened->data().data());
        counter->fetch_add(1);
        FERRY_CHILD_CHECK(opened->detach());
      }
      return 0;
    }));
  }
  for (auto& worker : workers) EXPECT_EQ(worker.wait(), 0);
  auto* counter = reinterpret_cast<std::atomic<std::uint64_t>*>(holder->data().data());
  EXPECT_EQ(counter->load(), 4 * rounds);
  ASSERT_TRUE(holder->detach());
  EXPECT_FALSE(exists("/dev/shm/ferry." + name));
}

TEST(SegmentGarbage, GcRemovesOnlyProcessSegmentsWhoseProcessesAreDead) {
  const std::string dead = ferry::test::unique_name("dead");
  const std::string alive = ferry::test::unique_name("alive");
  const std::string kernel = ferry::test::unique_name("kernel");
  auto dead_holder = Child::exec(FERRY_TEST_PEER, {"create-hold", "posix", dead, "process", "4096"});
  auto live_holder = Child::exec(FERRY_TEST_PEER, {"create-hold", "posix", alive, "process", "4096"});
  auto kernel_maker = Child::exec(FERRY_TEST_PEER, {"create-hold", "posix", kernel, "kernel", "4096"});
  for (const auto& name : {dead, alive, kernel}) {
    for (int i = 0; i < 2000 && !exists("/dev/shm/ferry." + name); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_TRUE(exists("/dev/shm/ferry." + name)) << name;
  }
  dead_holder.kill(SIGKILL);
  dead_holder.wait();
  kernel_maker.kill(SIGKILL);
  kernel_maker.wait();

  const auto preview = ferry::collect_garbage({}, /*dry_run=*/true);
  bool previewed = false;
  for (const auto& record : preview) previewed |= record.locator == dead;
  EXPECT_TRUE(previewed);
  EXPECT_TRUE(exists("/dev/shm/ferry." + dead)) << "a dry run removes nothing";

  const auto removed = ferry::collect_garbage();
  std::vector<std::string> names;
  for (const auto& record : removed) names.push_back(record.locator);
  EXPECT_NE(std::find(names.begin(), names.end(), dead), names.end());
  EXPECT_EQ(std::find(names.begin(), names.end(), alive), names.end());
  EXPECT_EQ(std::find(names.begin(), names.end(), kernel), names.end());
  EXPECT_FALSE(exists("/dev/shm/ferry." + dead));
  EXPECT_TRUE(exists("/dev/shm/ferry." + alive));
  EXPECT_TRUE(exists("/dev/shm/ferry." + kernel));
  live_holder.kill(SIGKILL);
  live_holder.wait();
  (void)Segment::destroy(alive);
  (void)Segment::destroy(kernel);
}

}  // namespace
