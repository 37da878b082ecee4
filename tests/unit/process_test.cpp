#include "ferry/os/process.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>

#include <gtest/gtest.h>

#include "ferry_test.hpp"

namespace {

TEST(Credentials, CurrentIsTheEffectiveIdentity) {
  const auto self = ferry::Credentials::current();
  EXPECT_EQ(self.uid, ::geteuid());
  EXPECT_EQ(self.gid, ::getegid());
  EXPECT_EQ(self.pid, ::getpid());
}

TEST(ProcessId, CurrentIsAliveAndRoundTripsThroughOneWord) {
  const auto self = ferry::ProcessId::current();
  EXPECT_EQ(self.pid(), ::getpid());
  EXPECT_TRUE(self.alive());
  EXPECT_NE(self.packed(), 0u);
  EXPECT_EQ(ferry::ProcessId::from_packed(self.packed()), self);
  EXPECT_EQ(ferry::ProcessId::of(::getpid()), self);
}

TEST(ProcessId, NobodyIsNeverAlive) {
  EXPECT_TRUE(ferry::ProcessId::from_packed(0).empty());
  EXPECT_FALSE(ferry::ProcessId::from_packed(0).alive());
  EXPECT_FALSE(ferry::ProcessId::of(0).has_value());
  EXPECT_FALSE(ferry::ProcessId::of(-5).has_value());
}

TEST(ProcessId, AReusedPidIsNotTheSameProcess) {
  // Same pid as a live process, but another start token: what a recycled pid looks like.
  const auto self = ferry::ProcessId::current();
  const auto impostor = ferry::ProcessId::from_packed(self.packed() ^ 0x5a5a5a5au);
  EXPECT_EQ(impostor.pid(), self.pid());
  EXPECT_FALSE(impostor.alive());
}

TEST(ProcessId, KilledChildIsDeadEvenBeforeItIsReaped) {
  ferry::test::Event ready;
  auto child = ferry::test::Child::spawn([&] {
    ready.signal();
    for (;;) ::pause();
    return 0;
  });
  ASSERT_TRUE(ready.wait());
  const auto identity = ferry::ProcessId::of(child.pid());
  ASSERT_TRUE(identity.has_value());
  EXPECT_TRUE(identity->alive());
  child.kill(SIGKILL);
  // Wait until it is a zombie without reaping it.
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(child.pid()), &info, WEXITED | WNOWAIT), 0);
  EXPECT_FALSE(identity->alive());
  EXPECT_EQ(child.wait(), 128 + SIGKILL);
  EXPECT_FALSE(identity->alive());
}

TEST(ProcessId, ForkedChildHasItsOwnIdentity) {
  const auto parent = ferry::ProcessId::current();
  auto child = ferry::test::Child::spawn([&] {
    const auto mine = ferry::ProcessId::current();
    FERRY_CHILD_CHECK(mine.pid() == ::getpid());
    FERRY_CHILD_CHECK(mine != parent);
    FERRY_CHILD_CHECK(parent.alive());
    return 0;
  });
  EXPECT_EQ(child.wait(), 0);
}

}  // namespace
