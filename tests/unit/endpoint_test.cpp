// Endpoint strings, and one test body run against every transport: order,
// message boundaries, blocking/try/timed calls, the urgent lane, sender
// identity, many senders, and raw clients that send malformed frames.
#include "ferry/transport/endpoint.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <future>
#include <map>
#include <thread>

#include <gtest/gtest.h>

#include "endpoint_cases.hpp"
#include "ferry/messaging/endpoints.hpp"
#include "ferry/transport/framing.hpp"
#include "ferry/transport/socket.hpp"
#include "ferry_test.hpp"

namespace ferry {
namespace {

using namespace std::chrono_literals;
using test::EndpointCase;
using test::frame;
using test::hello_frame;
using test::raw_client;
using test::pattern;
using test::text_bytes;
using test::text_of;

constexpr auto kWatchdog = 30s;  // a receive that should succeed gives up only after this

// ---- parsing ---------------------------------------------------------------

TEST(EndpointParse, AcceptsEveryScheme) {
  struct Case {
    const char* text;
    Endpoint::Scheme scheme;
    const char* name;
    std::uint16_t port;
    int fd;
    int urgent_fd;
  };
  const Case cases[] = {
      {"shm://orders", Endpoint::Scheme::shm, "orders", 0, -1, -1},
      {"shm:///var/lib/app/box", Endpoint::Scheme::shm, "/var/lib/app/box", 0, -1, -1},
      {"unix:///run/app.sock", Endpoint::Scheme::unix_stream, "/run/app.sock", 0, -1, -1},
      {"unix://@abstract", Endpoint::Scheme::unix_stream, "@abstract", 0, -1, -1},
      {"unixgram:///tmp/d.sock", Endpoint::Scheme::unix_datagram, "/tmp/d.sock", 0, -1, -1},
      {"tcp://127.0.0.1:7000", Endpoint::Scheme::tcp, "127.0.0.1", 7000, -1, -1},
      {"tcp://[::1]:65535", Endpoint::Scheme::tcp, "::1", 65535, -1, -1},
      {"tcp://localhost:0", Endpoint::Scheme::tcp, "localhost", 0, -1, -1},
      {"udp://example.org:53", Endpoint::Scheme::udp, "example.org", 53, -1, -1},
      {"udp://[fe80::1]:9", Endpoint::Scheme::udp, "fe80::1", 9, -1, -1},
      {"pipe:fd=3", Endpoint::Scheme::pipe, "", 0, 3, -1},
      {"pipe:fd=3,4", Endpoint::Scheme::pipe, "", 0, 3, 4},
      {"pipe:stdin", Endpoint::Scheme::pipe, "", 0, 0, -1},
      {"pipe:stdout", Endpoint::Scheme::pipe, "", 0, 1, -1},
  };
  for (const Case& each : cases) {
    SCOPED_TRACE(each.text);
    auto parsed = Endpoint::parse(each.text);
    ASSERT_TRUE(parsed) << parsed.error().message();
    EXPECT_EQ(parsed->scheme, each.scheme);
    EXPECT_EQ(parsed->name, each.name);
    EXPECT_EQ(parsed->port, each.port);
    EXPECT_EQ(parsed->fd, each.fd);
    EXPECT_EQ(parsed->urgent_fd, each.urgent_fd);
    EXPECT_EQ(parsed->to_string(), each.text);  // canonical strings round-trip exactly
  }
}

TEST(EndpointParse, OtherSpellingsRoundTripToTheSameEndpoint) {
  for (const char* text : {"pipe:fd=0", "pipe:fd=1", "pipe:fd=007", "tcp://h:0080"}) {
    SCOPED_TRACE(text);
    auto parsed = Endpoint::parse(text);
    ASSERT_TRUE(parsed) << parsed.error().message();
    auto again = Endpoint::parse(parsed->to_string());
    ASSERT_TRUE(again) << again.error().message();
    EXPECT_EQ(*again, *parsed);
  }
}

TEST(EndpointParse, RefusesMalformedStringsNamingThemAndTheReason) {
  const std::pair<const char*, const char*> cases[] = {
      {"orders", "no scheme"},
      {"", "no scheme"},
      {"http://host:80", "unknown scheme 'http'"},
      {"shm://", "missing mailbox name"},
      {"shm://a/b", "no '/'"},
      {"unix://", "missing path"},
      {"unix://relative/path.sock", "relative unix path"},
      {"unixgram://x.sock", "relative unix path"},
      {"unix://@", "missing abstract name"},
      {"tcp://127.0.0.1", "missing port"},
      {"tcp://127.0.0.1:", "missing port"},
      {"tcp://:7000", "missing host"},
      {"tcp://[::1]", "missing port"},
      {"tcp://[::1:7000", "misses its ']'"},
      {"tcp://::1:7000", "needs brackets"},
      {"tcp://host:65536", "out of range"},
      {"tcp://host:99999999999999999999", "out of range"},
      {"udp://host:-1", "not a number"},
      {"tcp://host:7000/path", "not a number"},
      {"pipe:", "pipe:fd=N"},
      {"pipe:fd=", "bad fd"},
      {"pipe:fd=-1", "bad fd"},
      {"pipe:fd=x", "bad fd"},
      {"pipe:fd=3,", "bad fd"},
      {"pipe:fd=3,3", "descriptor of its own"},
      {"pipe:fd=99999999999", "bad fd"},
  };
  for (const auto& [text, reason] : cases) {
    SCOPED_TRACE(text);
    auto parsed = Endpoint::parse(text);
    ASSERT_FALSE(parsed);
    EXPECT_EQ(parsed.error().code(), errc::invalid_argument);
    EXPECT_NE(parsed.error().object().find(text), std::string::npos) << parsed.error().message();
    EXPECT_NE(parsed.error().message().find(reason), std::string::npos) << parsed.error().message();
  }
  const std::string long_path = "unix:///" + std::string(200, 'x');
  auto parsed = Endpoint::parse(long_path);
  ASSERT_FALSE(parsed);
  EXPECT_NE(parsed.error().detail().find("longer than 107 bytes"), std::string::npos);
}

TEST(EndpointParse, ShmIsOpenedByTheMessagingLayerOnly) {
  auto endpoint = Endpoint::parse("shm://anything");
  ASSERT_TRUE(endpoint);
  auto sender = open_transport_sender(*endpoint);
  ASSERT_FALSE(sender);
  EXPECT_EQ(sender.error().code(), errc::unsupported);
}

TEST(EndpointOpen, NobodyListeningIsNotFound) {
  test::TempDir directory;
  auto sender = open_sender("unix://" + directory.file("nobody"));
  ASSERT_FALSE(sender);
  EXPECT_EQ(sender.error().code(), errc::not_found) << sender.error().message();
  auto mailbox = open_sender("shm://" + test::unique_name("none"));
  ASSERT_FALSE(mailbox);
  EXPECT_EQ(mailbox.error().code(), errc::not_found);
  auto tcp = open_sender("tcp://127.0.0.1:0");
  ASSERT_FALSE(tcp);
  EXPECT_EQ(tcp.error().code(), errc::invalid_argument);
}

TEST(EndpointOpen, APipeWithoutAnUrgentLaneRefusesUrgentSends) {
  int ends[2];
  ASSERT_EQ(::pipe2(ends, O_CLOEXEC), 0);
  auto receiver = open_receiver("pipe:fd=" + std::to_string(ends[0]));
  ASSERT_TRUE(receiver) << receiver.error().message();
  auto sender = open_sender("pipe:fd=" + std::to_string(ends[1]));
  ASSERT_TRUE(sender) << sender.error().message();
  auto urgent = (*sender)->send(text_bytes("now"), {.urgent = true});
  ASSERT_FALSE(urgent);
  EXPECT_EQ(urgent.error().code(), errc::unsupported);
  // A read end is not a sender, nor a write end a receiver.
  int other[2];
  ASSERT_EQ(::pipe2(other, O_CLOEXEC), 0);
  auto wrong = open_sender("pipe:fd=" + std::to_string(other[0]));
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code(), errc::invalid_argument);
  ::close(other[1]);
}

// ---- one body, every transport ---------------------------------------------

class EndpointTransport : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { open(EndpointCase::Messages::small); }

  // A receiver at a fresh endpoint and one sender to it; the old ones (and
  // the old mailbox) are gone first.
  void open(EndpointCase::Messages messages) {
    sender_.reset();
    receiver_.reset();
    case_.emplace(GetParam(), messages);
    auto receiver = case_->open_receiver();
    ASSERT_TRUE(receiver) << receiver.error().message();
    receiver_ = std::move(*receiver);
    auto sender = case_->open_sender();
    ASSERT_TRUE(sender) << sender.error().message();
    sender_ = std::move(*sender);
  }

  EndpointMessage expect_message() {
    auto message = receiver_->receive_for(kWatchdog);
    EXPECT_TRUE(message) << message.error().message();
    return message ? std::move(*message) : EndpointMessage();
  }

  void expect_bytes(const EndpointMessage& message, std::span<const std::byte> bytes) {
    ASSERT_EQ(message.size(), bytes.size());
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), message.data().begin()));
  }

  std::optional<EndpointCase> case_;
  std::unique_ptr<Receiver> receiver_;
  std::unique_ptr<Sender> sender_;
};

// SO_SNDBUF of a fresh socket of this family and type (doubled by the
// kernel from net.core.wmem_default).
int default_send_buffer(int family, int type) {
  const Fd fd(::socket(family, type | SOCK_CLOEXEC, 0));
  int buffer = 0;
  socklen_t size = sizeof buffer;
  EXPECT_EQ(::getsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &buffer, &size), 0);
  return buffer;
}

TEST_P(EndpointTransport, KeepsTheBoundariesOfMessagesUpToTheLargestAndRefusesLarger) {
  ASSERT_NO_FATAL_FAILURE(open(EndpointCase::Messages::large));
  if (GetParam() == "udp") {
    EXPECT_EQ(sender_->max_message(), 65507u - 4u);  // one UDP datagram of IPv4, less the envelope
  } else if (GetParam() == "unixgram") {
    // What Linux lets a UNIX datagram socket send (its send buffer less 32
    // bytes), less the envelope: 212,956 bytes with the default wmem_default.
    EXPECT_EQ(sender_->max_message(), static_cast<std::size_t>(default_send_buffer(AF_UNIX, SOCK_DGRAM)) - 32 - 4);
  } else {
    EXPECT_GE(sender_->max_message(), std::size_t{16} << 20);
  }
  std::vector<std::size_t> sizes{0, 1, 2, 100, 4096, 65536 - 100, 65536, 1 << 20, 16 << 20};
  std::erase_if(sizes, [&](std::size_t size) { return size >= sender_->max_message(); });
  sizes.push_back(sender_->max_message());
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    SCOPED_TRACE(sizes[i]);
    const auto bytes = pattern(sizes[i], i);
    // Sent from another thread: a stream holds less than the largest message.
    auto sending = std::async(std::launch::async, [&] { return sender_->send(bytes); });
    const EndpointMessage message = expect_message();
    auto sent = sending.get();
    ASSERT_TRUE(sent) << sent.error().message();
    ASSERT_NO_FATAL_FAILURE(expect_bytes(message, bytes));
  }
  // Small messages back to back, none read before the last is sent: each
  // comes out alone (a stream must not merge or split them).
  const std::size_t all[] = {1, 0, 17, 4096, 2, 1500};
  const auto burst = std::span(all).first(std::min(std::size(all), case_->holds()));
  for (std::size_t i = 0; i < burst.size(); ++i) ASSERT_TRUE(sender_->send(pattern(burst[i], 100 + i)));
  for (std::size_t i = 0; i < burst.size(); ++i) {
    SCOPED_TRACE(burst[i]);
    ASSERT_NO_FATAL_FAILURE(expect_bytes(expect_message(), pattern(burst[i], 100 + i)));
  }

  const auto too_large = pattern(sender_->max_message() + 1, 0);
  auto refused = sender_->send(too_large);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), errc::invalid_argument);
  EXPECT_NE(refused.error().object().find(case_->sender_endpoint()), std::string::npos) << refused.error().message();
  EXPECT_NE(refused.error().detail().find("exceeds the maximum of " + std::to_string(sender_->max_message())),
            std::string::npos)
      << refused.error().message();
  auto bad_priority = sender_->send(text_bytes("x"), {.priority = 32});
  ASSERT_FALSE(bad_priority);
  EXPECT_EQ(bad_priority.error().code(), errc::invalid_argument);
  // Neither refused send reached the receiver.
  auto nothing = receiver_->try_receive();
  ASSERT_TRUE(nothing) << nothing.error().message();
  EXPECT_FALSE(*nothing);
}

TEST_P(EndpointTransport, DeliversInOrderWithTheirPriorities) {
  // Only shm orders by priority (the Mailbox tests prove that order): there
  // one priority keeps FIFO; elsewhere each message carries its own.
  const auto priority_of = [&](std::size_t n) -> unsigned {
    return case_->scheme() == "shm" ? 3u : static_cast<unsigned>(n % kEndpointPriorities);
  };
  const std::size_t total = test::scaled(2000);
  std::size_t received = 0;
  for (std::size_t sent = 0; sent < total;) {
    const std::size_t batch = std::min(case_->holds(), total - sent);
    for (std::size_t i = 0; i < batch; ++i, ++sent) {
      const std::string text = "message " + std::to_string(sent);
      ASSERT_TRUE(sender_->send(text_bytes(text), {.priority = priority_of(sent)}));
    }
    for (; received < sent; ++received) {
      const EndpointMessage message = expect_message();
      ASSERT_EQ(text_of(message), "message " + std::to_string(received));
      EXPECT_EQ(message.priority(), priority_of(received));
      EXPECT_FALSE(message.urgent());
    }
  }
}

TEST_P(EndpointTransport, TryAndTimedCallsDoNotWaitBeyondTheirLimit) {
  auto nothing = receiver_->try_receive();
  ASSERT_TRUE(nothing) << nothing.error().message();
  EXPECT_FALSE(*nothing);
  auto timed = receiver_->receive_for(10ms);
  ASSERT_FALSE(timed);
  EXPECT_EQ(timed.error().code(), errc::timed_out);
  auto late = receiver_->receive_until(steady_clock::now() - 1s);
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code(), errc::timed_out);

  // A blocking receive waits for a message sent later.
  std::thread later([&] {
    std::this_thread::sleep_for(20ms);
    EXPECT_TRUE(sender_->send(text_bytes("later")));
  });
  auto message = receiver_->receive();
  later.join();
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(text_of(*message), "later");

  auto tried = sender_->try_send(text_bytes("tried"));
  ASSERT_TRUE(tried) << tried.error().message();
  EXPECT_TRUE(*tried);
  ASSERT_TRUE(sender_->send_for(text_bytes("timed"), 1s));
  EXPECT_EQ(text_of(expect_message()), "tried");
  EXPECT_EQ(text_of(expect_message()), "timed");
}

// Run only where it applies (instantiated below): udp drops what its
// receiver has no room for, and a pipe has one writer.
class EndpointWithBackpressure : public EndpointTransport {};
class EndpointWithManySenders : public EndpointTransport {};

TEST_P(EndpointWithBackpressure, AFullReceiverMakesTrySendSayNoAndTimedSendTimeOut) {
  ASSERT_TRUE(case_->backpressure());
  const auto bytes = pattern(64 << 10 < sender_->max_message() ? 64 << 10 : sender_->max_message(), 1);
  std::size_t accepted = 0;
  for (;;) {
    auto tried = sender_->try_send(bytes);
    ASSERT_TRUE(tried) << tried.error().message();
    if (!*tried) break;
    ASSERT_LT(++accepted, 100000u) << "never full";
  }
  auto timed = sender_->send_for(bytes, 10ms);
  ASSERT_FALSE(timed);
  EXPECT_EQ(timed.error().code(), errc::timed_out);
  if (case_->urgent_lane() && case_->scheme() != "shm") {
    // The urgent lane is not blocked by the full normal one, and overtakes all of it.
    ASSERT_TRUE(sender_->send_for(text_bytes("urgent"), kWatchdog, {.urgent = true}));
    const EndpointMessage first = expect_message();
    EXPECT_EQ(text_of(first), "urgent");
    EXPECT_TRUE(first.urgent());
  }
  // Drained while one more send completes what try_send committed.
  auto last = std::async(std::launch::async, [&] { return sender_->send(text_bytes("last")); });
  for (std::size_t i = 0; i < accepted; ++i) {
    SCOPED_TRACE(i);
    ASSERT_NO_FATAL_FAILURE(expect_bytes(expect_message(), bytes));
  }
  ASSERT_TRUE(last.get());
  EXPECT_EQ(text_of(expect_message()), "last");
}

TEST_P(EndpointTransport, UrgentMessagesOvertakeQueuedNormalOnes) {
  const int queued = static_cast<int>(std::min<std::size_t>(20, case_->holds() - 1));
  for (int i = 0; i < queued; ++i) ASSERT_TRUE(sender_->send(pattern(1000, i)));
  auto urgent = sender_->send(text_bytes("urgent"), {.urgent = true});
  if (!case_->urgent_lane()) {
    ASSERT_FALSE(urgent);
    EXPECT_EQ(urgent.error().code(), errc::unsupported);
    for (int i = 0; i < queued; ++i) expect_message();
    return;
  }
  ASSERT_TRUE(urgent) << urgent.error().message();
  const EndpointMessage first = expect_message();
  EXPECT_EQ(text_of(first), "urgent");
  EXPECT_TRUE(first.urgent());
  for (int i = 0; i < queued; ++i) {
    const EndpointMessage message = expect_message();
    const auto bytes = pattern(1000, i);
    ASSERT_EQ(message.size(), bytes.size());
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), message.data().begin())) << "message " << i;
    EXPECT_FALSE(message.urgent());
  }
}

TEST_P(EndpointTransport, SenderIdentityIsAttestedOrSaidToBeUnknown) {
  ASSERT_TRUE(sender_->send(text_bytes("who")));
  const EndpointMessage message = expect_message();
  EXPECT_EQ(text_of(message), "who");
  if (!case_->attested()) {
    EXPECT_FALSE(message.attested());
    EXPECT_FALSE(message.sender().has_value());
    return;
  }
  ASSERT_TRUE(message.attested());
  EXPECT_EQ(message.sender()->uid, ::geteuid());
  EXPECT_EQ(message.sender()->gid, ::getegid());
  EXPECT_EQ(message.sender()->pid, ::getpid());
  // A Mailbox attests the pid of a sender in another process (endpoint_process_test).
  if (case_->scheme() != "shm") {
    EXPECT_TRUE(message.sender()->pid_attested);
  }
}

TEST_P(EndpointWithManySenders, ManySendersKeepTheirOwnOrder) {
  ASSERT_TRUE(case_->many_senders());
  constexpr int kSenders = 3;
  const int each = static_cast<int>(test::scaled(30));
  std::vector<std::unique_ptr<Sender>> senders;
  for (int s = 0; s < kSenders; ++s) {
    auto sender = case_->open_sender();
    ASSERT_TRUE(sender) << sender.error().message();
    senders.push_back(std::move(*sender));
  }
  // Rounds of every sender interleaved, in batches the receiver holds.
  const int rounds_per_batch = std::max(1, static_cast<int>(case_->holds()) / kSenders);
  std::map<int, int> next;
  for (int i = 0; i < each;) {
    int batch = 0;
    for (; batch < rounds_per_batch && i < each; ++batch, ++i) {
      for (int s = 0; s < kSenders; ++s) {
        const std::string text = std::to_string(s) + ":" + std::to_string(i);
        ASSERT_TRUE(senders[s]->send(text_bytes(text)));
      }
    }
    for (int n = 0; n < batch * kSenders; ++n) {
      const std::string text = text_of(expect_message());
      const auto colon = text.find(':');
      ASSERT_NE(colon, std::string::npos) << text;
      const int s = std::stoi(text.substr(0, colon));
      EXPECT_EQ(std::stoi(text.substr(colon + 1)), next[s]++) << "sender " << s;
    }
  }
  for (int s = 0; s < kSenders; ++s) EXPECT_EQ(next[s], each);
}

INSTANTIATE_TEST_SUITE_P(Every, EndpointTransport, ::testing::ValuesIn(test::endpoint_schemes()), test::scheme_name);

std::vector<std::string> schemes_except(std::string_view left_out) {
  std::vector<std::string> schemes;
  for (const std::string& scheme : test::endpoint_schemes()) {
    if (scheme != left_out) schemes.push_back(scheme);
  }
  return schemes;
}
INSTANTIATE_TEST_SUITE_P(Every, EndpointWithBackpressure, ::testing::ValuesIn(schemes_except("udp")), test::scheme_name);
INSTANTIATE_TEST_SUITE_P(Every, EndpointWithManySenders, ::testing::ValuesIn(schemes_except("pipe")), test::scheme_name);

// ---- hostile clients against listeners -------------------------------------

class EndpointListener : public ::testing::TestWithParam<std::string> {};

TEST_P(EndpointListener, DisconnectsMalformedClientsAndKeepsServingGoodOnes) {
  EndpointCase endpoint_case(GetParam());
  auto receiver = endpoint_case.open_receiver();
  ASSERT_TRUE(receiver) << receiver.error().message();
  auto good = endpoint_case.open_sender();
  ASSERT_TRUE(good) << good.error().message();

  const auto garbage = text_bytes("GARBAGE! not a frame");
  const std::vector<std::byte> message_first = frame(text_bytes(std::string_view("M\0\0\0hi", 6)));
  std::vector<std::byte> bad_envelope = hello_frame();
  const auto wrong_kind = frame(text_bytes(std::string_view("X\0\0\0hi", 6)));
  bad_envelope.insert(bad_envelope.end(), wrong_kind.begin(), wrong_kind.end());
  std::vector<std::byte> oversized = hello_frame();
  const auto huge = frame_header(0xFFFF'FFF0u);
  oversized.insert(oversized.end(), huge.begin(), huge.end());
  const std::vector<std::span<const std::byte>> attacks{garbage, message_first, bad_envelope, oversized};

  std::vector<StreamSocket> clients;
  for (std::size_t i = 0; i < attacks.size(); ++i) {
    auto client = raw_client((*receiver)->endpoint());
    ASSERT_TRUE(client) << client.error().message();
    ASSERT_TRUE(client->write_all(attacks[i]));
    clients.push_back(std::move(*client));
    // The good sender is served between the attacks.
    const std::string text = "good " + std::to_string(i);
    ASSERT_TRUE((*good)->send(text_bytes(text)));
    auto message = (*receiver)->receive_for(kWatchdog);
    ASSERT_TRUE(message) << message.error().message();
    EXPECT_EQ(text_of(*message), text);
  }
  // Every attack is seen by now or soon; the watchdog only bounds a broken receiver.
  const deadline give_up = deadline_after(kWatchdog);
  while ((*receiver)->stats().closed_malformed + (*receiver)->stats().closed_oversized < attacks.size() &&
         steady_clock::now() < give_up) {
    (void)(*receiver)->receive_for(10ms);
  }
  const ReceiverStats stats = (*receiver)->stats();
  EXPECT_EQ(stats.closed_malformed, 3u);
  EXPECT_EQ(stats.closed_oversized, 1u);
  EXPECT_EQ(stats.accepted, 1u + attacks.size());
  // Each attacker sees its connection closed.
  for (StreamSocket& client : clients) {
    std::byte byte{};
    auto read = client.read_some_for(std::span(&byte, 1), kWatchdog);
    EXPECT_TRUE(!read || *read == 0);
  }
  ASSERT_TRUE((*good)->send(text_bytes("still served")));
  auto message = (*receiver)->receive_for(kWatchdog);
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(text_of(*message), "still served");
}

// A large message whose first part came at full speed makes the receiver
// look for the rest a little before it sleeps. The rest may also come late,
// or never: the receiver then waits as always, serves other senders
// meanwhile, and hands out the message whole when it is complete.
TEST_P(EndpointListener, ALargeMessageWhoseRestComesLateArrivesWhole) {
  EndpointCase endpoint_case(GetParam());
  auto receiver = endpoint_case.open_receiver();
  ASSERT_TRUE(receiver) << receiver.error().message();
  auto good = endpoint_case.open_sender();
  ASSERT_TRUE(good) << good.error().message();
  auto client = raw_client((*receiver)->endpoint());
  ASSERT_TRUE(client) << client.error().message();

  const std::vector<std::byte> payload = pattern(256 * 1024, 3);
  std::vector<std::byte> envelope{std::byte{'M'}, std::byte{0}, std::byte{0}, std::byte{0}};
  envelope.insert(envelope.end(), payload.begin(), payload.end());
  std::vector<std::byte> wire = hello_frame();
  const std::size_t hello_size = wire.size();
  const auto message_frame = frame(envelope);
  wire.insert(wire.end(), message_frame.begin(), message_frame.end());
  const std::size_t first_part = hello_size + 100 * 1024;
  ASSERT_TRUE(client->write_all(std::span(wire).first(first_part)));

  // Part of it is here: nothing to hand out yet, and the receive times out.
  auto early = (*receiver)->receive_for(50ms);
  ASSERT_FALSE(early);
  EXPECT_EQ(early.error().code(), errc::timed_out);
  // Another sender is served while the large message waits for its rest.
  ASSERT_TRUE((*good)->send(text_bytes("meanwhile")));
  auto other = (*receiver)->receive_for(kWatchdog);
  ASSERT_TRUE(other) << other.error().message();
  EXPECT_EQ(text_of(*other), "meanwhile");

  ASSERT_TRUE(client->write_all(std::span(wire).subspan(first_part)));
  auto message = (*receiver)->receive_for(kWatchdog);
  ASSERT_TRUE(message) << message.error().message();
  ASSERT_EQ(message->size(), payload.size());
  EXPECT_TRUE(std::equal(payload.begin(), payload.end(), message->data().begin()));
}

INSTANTIATE_TEST_SUITE_P(Streams, EndpointListener, ::testing::Values("unix", "tcp"), test::scheme_name);

// A datagram receiver takes datagrams up to its own max_message: a larger
// one (from a sender that allows more) is dropped and counted, and the
// messages around it arrive.
class DatagramReceiverLimit : public ::testing::TestWithParam<std::string> {};

TEST_P(DatagramReceiverLimit, DropsAndCountsDatagramsAboveItsMaxMessage) {
  EndpointCase endpoint_case(GetParam());
  auto receiver = endpoint_case.open_receiver({.max_message = 1000});
  ASSERT_TRUE(receiver) << receiver.error().message();
  auto sender = endpoint_case.open_sender();
  ASSERT_TRUE(sender) << sender.error().message();
  ASSERT_GT((*sender)->max_message(), 1001u);
  ASSERT_TRUE((*sender)->send(pattern(1000, 1)));
  ASSERT_TRUE((*sender)->send(pattern(1001, 2)));
  ASSERT_TRUE((*sender)->send(pattern(10, 3)));
  for (const auto& [size, seed] : {std::pair{1000, 1}, std::pair{10, 3}}) {
    auto message = (*receiver)->receive_for(kWatchdog);
    ASSERT_TRUE(message) << message.error().message();
    EXPECT_TRUE(std::ranges::equal(message->data(), pattern(size, seed))) << "message of " << size << " bytes";
  }
  EXPECT_EQ((*receiver)->stats().dropped_datagrams, 1u);
}

TEST_P(DatagramReceiverLimit, AReceiverWithoutALimitOfItsOwnTakesTheLargestDatagram) {
  EndpointCase endpoint_case(GetParam());
  auto receiver = endpoint_case.open_receiver({.max_message = SIZE_MAX});
  ASSERT_TRUE(receiver) << receiver.error().message();
  auto sender = endpoint_case.open_sender();
  ASSERT_TRUE(sender) << sender.error().message();
  const auto largest = pattern((*sender)->max_message(), 4);
  ASSERT_TRUE((*sender)->send(largest));
  auto message = (*receiver)->receive_for(kWatchdog);
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_TRUE(std::ranges::equal(message->data(), largest));
  EXPECT_EQ((*receiver)->stats().dropped_datagrams, 0u);
}

// The receiver reads a datagram into a buffer sized as the last one was:
// growing (the rest spills and is appended), alike, and shrinking (copied
// into a buffer of its size) all deliver every byte.
TEST_P(DatagramReceiverLimit, DatagramsThatGrowAndShrinkArriveWhole) {
  EndpointCase endpoint_case(GetParam());
  auto receiver = endpoint_case.open_receiver();
  ASSERT_TRUE(receiver) << receiver.error().message();
  auto sender = endpoint_case.open_sender();
  ASSERT_TRUE(sender) << sender.error().message();
  const std::size_t most = std::min<std::size_t>((*sender)->max_message(), 60000);
  const std::size_t sizes[] = {10, 5000, 5000, most, most, 100, 30000, 29000, 1, most, 0};
  std::size_t seed = 10;
  for (const std::size_t size : sizes) {
    ASSERT_TRUE((*sender)->send(pattern(size, ++seed)));
    auto message = (*receiver)->receive_for(kWatchdog);
    ASSERT_TRUE(message) << message.error().message();
    EXPECT_TRUE(std::ranges::equal(message->data(), pattern(size, seed))) << "message of " << size << " bytes";
  }
  EXPECT_EQ((*receiver)->stats().dropped_datagrams, 0u);
}

INSTANTIATE_TEST_SUITE_P(Datagrams, DatagramReceiverLimit, ::testing::Values("unixgram", "udp"), test::scheme_name);

}  // namespace
}  // namespace ferry
