// Endpoints between real processes: a sender SIGKILLed in the middle of a
// message, senders whose receiver died, hostile raw clients in other
// processes, and the identity of a sender running as another user.
// Nothing here starts a thread: children are forked from a single-threaded
// test process (ThreadSanitizer builds run these too).
#include <signal.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "endpoint_cases.hpp"
#include "ferry/messaging/endpoints.hpp"
#include "ferry_test.hpp"

namespace ferry {
namespace {

using namespace std::chrono_literals;
using test::Child;
using test::EndpointCase;
using test::text_bytes;
using test::text_of;

constexpr auto kWatchdog = 60s;
constexpr int kKilled = 128 + SIGKILL;

// Calls receive_for(10ms) until `done` holds (or the watchdog gives up), and
// fails on any message that arrives meanwhile: none is expected.
template <class Predicate>
void serve_until(Receiver& receiver, Predicate done) {
  const deadline give_up = deadline_after(kWatchdog);
  while (!done(receiver.stats()) && steady_clock::now() < give_up) {
    auto message = receiver.receive_for(10ms);
    if (message) ADD_FAILURE() << "unexpected message of " << message->size() << " bytes";
  }
  EXPECT_TRUE(done(receiver.stats()));
}

void expect_text(Receiver& receiver, std::string_view text) {
  auto message = receiver.receive_for(kWatchdog);
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(text_of(*message), text);
}

// ---- a sender dies in the middle of a message ------------------------------

class SenderDeath : public ::testing::TestWithParam<std::string> {};

TEST_P(SenderDeath, TheReceiverGetsNoPartOfTheCutMessageAndServesTheOthers) {
  EndpointCase endpoint_case(GetParam());
  auto receiver = endpoint_case.open_receiver();
  ASSERT_TRUE(receiver) << receiver.error().message();
  test::Event cut;
  Child sender = Child::spawn([&]() -> int {
    auto opened = endpoint_case.open_sender();
    FERRY_CHILD_CHECK(opened);
    FERRY_CHILD_CHECK((*opened)->send(text_bytes("whole")));
    // 16 MiB is far more than any socket or pipe buffer: try_send commits
    // the frame with its first bytes and keeps the rest, which never comes.
    const auto large = test::pattern(std::size_t{16} << 20, 1);
    auto tried = (*opened)->try_send(large);
    FERRY_CHILD_CHECK(tried && *tried);
    cut.signal();
    for (;;) ::pause();
  });
  endpoint_case.close_sender_ends();
  ASSERT_TRUE(cut.wait(kWatchdog));
  sender.kill(SIGKILL);
  ASSERT_EQ(sender.wait_for(kWatchdog), kKilled);

  ASSERT_NO_FATAL_FAILURE(expect_text(**receiver, "whole"));
  if (GetParam() == "pipe") {
    // The only writer is gone: end of stream, and nothing of the cut message.
    auto after = (*receiver)->receive_for(kWatchdog);
    ASSERT_FALSE(after) << "a message of " << after->size() << " bytes";
    EXPECT_EQ(after.error().code(), errc::peer_gone) << after.error().message();
    return;
  }
  serve_until(**receiver, [](const ReceiverStats& stats) { return stats.closed_mid_message == 1; });
  EXPECT_EQ((*receiver)->stats().closed_by_peer, 1u);
  auto good = endpoint_case.open_sender();
  ASSERT_TRUE(good) << good.error().message();
  ASSERT_TRUE((*good)->send(text_bytes("after the death")));
  ASSERT_NO_FATAL_FAILURE(expect_text(**receiver, "after the death"));
}

INSTANTIATE_TEST_SUITE_P(Streams, SenderDeath, ::testing::Values("unix", "tcp", "pipe"), test::scheme_name);

// ---- a receiver dies --------------------------------------------------------

class ReceiverDeath : public ::testing::TestWithParam<std::string> {};

TEST_P(ReceiverDeath, ItsSenderGetsPeerGone) {
  const std::string scheme = GetParam();
  test::TempDir directory;
  int ends[2] = {-1, -1};
  std::string receiver_text;
  if (scheme == "pipe") {
    ASSERT_EQ(::pipe2(ends, O_CLOEXEC), 0);
    receiver_text = "pipe:fd=" + std::to_string(ends[0]);
  } else if (scheme == "unix" || scheme == "unixgram") {
    receiver_text = scheme + "://" + directory.file("socket");
  } else {
    receiver_text = scheme + "://127.0.0.1:0";
  }
  // The child publishes where it listens (a tcp port 0 becomes a real one).
  test::SharedAnonymous<std::array<char, 256>> published;
  test::Event listening;
  test::Event received;
  Child receiver = Child::spawn([&]() -> int {
    if (ends[1] >= 0) ::close(ends[1]);
    auto opened = open_receiver(receiver_text);
    FERRY_CHILD_CHECK(opened);
    const std::string where = (*opened)->endpoint().to_string();
    FERRY_CHILD_CHECK(where.size() < published->size());
    std::memcpy(published->data(), where.c_str(), where.size() + 1);
    listening.signal();
    auto message = (*opened)->receive_for(kWatchdog);
    FERRY_CHILD_CHECK(message && text_of(*message) == "hello");
    received.signal();
    for (;;) ::pause();
  });
  if (ends[0] >= 0) ::close(ends[0]);
  ASSERT_TRUE(listening.wait(kWatchdog));
  const std::string sender_text = scheme == "pipe" ? "pipe:fd=" + std::to_string(ends[1]) : published->data();
  auto sender = open_sender(sender_text);
  ASSERT_TRUE(sender) << sender.error().message();
  ASSERT_TRUE((*sender)->send(text_bytes("hello")));
  ASSERT_TRUE(received.wait(kWatchdog));
  receiver.kill(SIGKILL);
  ASSERT_EQ(receiver.wait_for(kWatchdog), kKilled);
  // The kernel may take the first send or two before it reports the
  // closed peer (tcp: the reset answers a segment); never a thousand.
  std::optional<error> failure;
  for (int i = 0; i < 1000 && !failure; ++i) {
    auto sent = (*sender)->send_for(text_bytes("into the void"), kWatchdog);
    if (!sent) failure = sent.error();
  }
  ASSERT_TRUE(failure) << "every send succeeded";
  EXPECT_EQ(failure->code(), errc::peer_gone) << failure->message();
  EXPECT_NE(failure->message().find("sender to " + sender_text), std::string::npos) << failure->message();
}

INSTANTIATE_TEST_SUITE_P(Every, ReceiverDeath, ::testing::Values("unix", "unixgram", "tcp", "udp", "pipe"),
                         test::scheme_name);

// ---- hostile clients in other processes -------------------------------------

class HostileClients : public ::testing::TestWithParam<std::string> {};

// A child that connects, writes `bytes`, and then waits for the receiver to
// close the connection (exit 0); or, given `stalled`, signals it and waits
// to be killed.
Child attacker(const Endpoint& endpoint, std::vector<std::byte> bytes, test::Event* stalled = nullptr) {
  return Child::spawn([=]() -> int {
    auto client = test::raw_client(endpoint);
    FERRY_CHILD_CHECK(client);
    FERRY_CHILD_CHECK(client->write_all(bytes));
    if (stalled) {
      stalled->signal();
      for (;;) ::pause();
    }
    std::array<std::byte, 64> buffer{};
    for (;;) {
      auto read = client->read_some_for(buffer, kWatchdog);
      if (!read || *read == 0) return read || read.error().code() == errc::peer_gone ? 0 : 90;
    }
  });
}

std::vector<std::byte> joined(std::vector<std::byte> first, std::span<const std::byte> second) {
  first.insert(first.end(), second.begin(), second.end());
  return first;
}

TEST_P(HostileClients, AreDisconnectedWhileGoodSendersAreServed) {
  EndpointCase endpoint_case(GetParam());
  auto receiver = endpoint_case.open_receiver();
  ASSERT_TRUE(receiver) << receiver.error().message();
  const Endpoint& where = (*receiver)->endpoint();

  const auto huge = frame_header(0xFFFF'FFF0u);
  const auto announced = frame_header(1u << 20);  // within max_message, then only 100 bytes come
  const std::array<std::byte, 4> bad_priority{std::byte{'M'}, std::byte{200}, std::byte{0}, std::byte{0}};
  test::Event written;
  Child garbage = attacker(where, test::pattern(4096, 9));
  Child oversized = attacker(where, joined(test::hello_frame(), huge));
  Child malformed = attacker(where, joined(test::hello_frame(), test::frame(bad_priority)));
  Child stalled = attacker(where, joined(joined(test::hello_frame(), announced), test::pattern(100, 3)), &written);

  auto good = endpoint_case.open_sender();
  ASSERT_TRUE(good) << good.error().message();
  const std::size_t rounds = test::scaled(100);
  for (std::size_t i = 0; i < rounds; ++i) {
    const std::string text = "good " + std::to_string(i);
    ASSERT_TRUE((*good)->send(text_bytes(text)));
    ASSERT_NO_FATAL_FAILURE(expect_text(**receiver, text));
  }
  serve_until(**receiver, [](const ReceiverStats& stats) {
    return stats.closed_malformed == 2 && stats.closed_oversized == 1;
  });
  // Each disconnected attacker saw its connection closed.
  EXPECT_EQ(garbage.wait_for(kWatchdog), 0);
  EXPECT_EQ(oversized.wait_for(kWatchdog), 0);
  EXPECT_EQ(malformed.wait_for(kWatchdog), 0);
  // The stalled one cost no more than its 100 bytes; killed, its frame is dropped.
  ASSERT_TRUE(written.wait(kWatchdog));
  stalled.kill(SIGKILL);
  EXPECT_EQ(stalled.wait_for(kWatchdog), kKilled);
  serve_until(**receiver, [](const ReceiverStats& stats) { return stats.closed_mid_message == 1; });
  EXPECT_EQ((*receiver)->stats().accepted, 5u);
  ASSERT_TRUE((*good)->send(text_bytes("still served")));
  ASSERT_NO_FATAL_FAILURE(expect_text(**receiver, "still served"));
}

INSTANTIATE_TEST_SUITE_P(Listeners, HostileClients, ::testing::Values("unix", "tcp"), test::scheme_name);

// ---- who sent it --------------------------------------------------------------

class OtherUser : public ::testing::TestWithParam<std::string> {};

TEST_P(OtherUser, IsTheSenderTheKernelAttests) {
  test::TempDir directory(0755);  // the other user may reach the socket
  auto receiver = open_receiver(GetParam() + "://" + directory.file("socket"), {.mode = 0666});
  ASSERT_TRUE(receiver) << receiver.error().message();
  const std::string where = (*receiver)->endpoint().to_string();
  test::Event received;
  Child other = Child::spawn([&]() -> int {
    test::become_other_user();
    auto sender = open_sender(where);
    FERRY_CHILD_CHECK(sender);
    FERRY_CHILD_CHECK((*sender)->send(text_bytes("from nobody")));
    FERRY_CHILD_CHECK(received.wait(kWatchdog));  // alive while its pid is checked
    return 0;
  });
  auto message = (*receiver)->receive_for(kWatchdog);
  ASSERT_TRUE(message) << message.error().message();
  received.signal();
  EXPECT_EQ(text_of(*message), "from nobody");
  ASSERT_TRUE(message->attested());
  EXPECT_EQ(message->sender()->uid, test::kOtherUid);
  EXPECT_EQ(message->sender()->gid, test::kOtherGid);
  EXPECT_EQ(message->sender()->pid, other.pid());
  EXPECT_TRUE(message->sender()->pid_attested);
  EXPECT_EQ(other.wait_for(kWatchdog), 0);
}

INSTANTIATE_TEST_SUITE_P(Unix, OtherUser, ::testing::Values("unix", "unixgram"), test::scheme_name);

TEST(EndpointIdentity, AShmSenderInAnotherProcessIsAttestedByItsPid) {
  EndpointCase endpoint_case("shm");
  auto receiver = endpoint_case.open_receiver();
  ASSERT_TRUE(receiver) << receiver.error().message();
  test::Event received;
  Child child = Child::spawn([&]() -> int {
    auto sender = endpoint_case.open_sender();
    FERRY_CHILD_CHECK(sender);
    FERRY_CHILD_CHECK((*sender)->send(text_bytes("from a child")));
    FERRY_CHILD_CHECK(received.wait(kWatchdog));
    return 0;
  });
  auto message = (*receiver)->receive_for(kWatchdog);
  ASSERT_TRUE(message) << message.error().message();
  received.signal();
  EXPECT_EQ(text_of(*message), "from a child");
  ASSERT_TRUE(message->attested());
  EXPECT_EQ(message->sender()->uid, ::geteuid());
  EXPECT_EQ(message->sender()->pid, child.pid());
  EXPECT_TRUE(message->sender()->pid_attested);
  EXPECT_EQ(message->origin(), static_cast<std::uint64_t>(child.pid()));
  EXPECT_EQ(child.wait_for(kWatchdog), 0);
}

}  // namespace
}  // namespace ferry
