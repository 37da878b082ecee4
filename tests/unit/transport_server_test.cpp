// The iterative and the concurrent (epoll) server: echo for many clients,
// hostile clients (malformed and oversized frames, slow-loris, a connection
// flood) that are disconnected while well-behaved clients keep their answers,
// one-at-a-time service, and graceful shutdown. Clients are threads over
// loopback; nothing here forks.
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/ferry.hpp"
#include "ferry_test.hpp"
#include "stream_pairs.hpp"

namespace {

using namespace std::chrono_literals;
using ferry::ConcurrentServer;
using ferry::errc;
using ferry::Frame;
using ferry::FramedStream;
using ferry::IterativeServer;
using ferry::PeerInfo;
using ferry::test::bytes_of;
using ferry::test::StreamKind;
using ferry::test::text_of;

constexpr auto kPatience = 60s;  // only a broken server makes a client wait this long


std::optional<Frame> echo(std::span<const std::byte> request, const PeerInfo&) {
  Frame reply(bytes_of("echo:").begin(), bytes_of("echo:").end());
  reply.insert(reply.end(), request.begin(), request.end());
  return reply;
}

// One request, one reply; false (with a gtest failure) if the reply is wrong.
bool round_trip(FramedStream& client, const std::string& request) {
  auto sent = client.send_frame_for(bytes_of(request), kPatience);
  if (!sent) {
    ADD_FAILURE() << sent.error().message();
    return false;
  }
  auto reply = client.receive_frame_for(kPatience);
  if (!reply) {
    ADD_FAILURE() << request << ": " << reply.error().message();
    return false;
  }
  if (text_of(*reply) != "echo:" + request) {
    ADD_FAILURE() << "reply to " << request << " was " << text_of(*reply);
    return false;
  }
  return true;
}

// True once the server closed this client's connection (end of stream,
// reset, or a refused write), seen within the patience.
bool disconnected_by_server(FramedStream& client) {
  auto frame = client.receive_frame_for(kPatience);
  return !frame && frame.error().code() == errc::peer_gone;
}

// A server of type Server running in a thread of its own on a fresh listener.
template <class Server>
struct Running {
  ferry::test::TempDir directory;
  StreamKind kind;
  std::unique_ptr<Server> server;
  std::thread loop;

  Running(StreamKind stream_kind, ferry::ServerOptions options, ferry::Handler handler = echo) : kind(stream_kind) {
    auto listener = ferry::test::listen_for(kind, directory, {.backlog = 512});
    EXPECT_TRUE(listener) << listener.error().message();
    auto made = Server::create(std::move(*listener), std::move(handler), options);
    EXPECT_TRUE(made) << made.error().message();
    server = std::move(*made);
    loop = std::thread([this] {
      auto ran = server->run();
      EXPECT_TRUE(ran) << ran.error().message();
    });
  }
  ~Running() {
    server->stop();
    if (loop.joinable()) loop.join();
  }
  ferry::result<FramedStream> connect() {
    auto socket = ferry::test::connect_to(kind, server->listener(), kPatience);
    if (!socket) return std::move(socket).error();
    return FramedStream(std::move(*socket));
  }
};

using ServerUnderTest = Running<ConcurrentServer>;

struct ServerCase {
  StreamKind kind;
  std::size_t workers;
};

void PrintTo(const ServerCase& server_case, std::ostream* out) {
  *out << (server_case.kind == StreamKind::unix_stream ? "unix" : "tcp4") << " with " << server_case.workers << " workers";
}

std::string case_name(const ::testing::TestParamInfo<ServerCase>& info) {
  return std::string(info.param.kind == StreamKind::unix_stream ? "unix" : "tcp4") + "_workers" +
         std::to_string(info.param.workers);
}

class Concurrent : public ::testing::TestWithParam<ServerCase> {};

TEST_P(Concurrent, ServesManyClientsAtOnceInOrderPerClient) {
  std::atomic<int> identified{0};
  ServerUnderTest under(GetParam().kind, {.workers = GetParam().workers},
                        [&](std::span<const std::byte> request, const PeerInfo& peer) {
                          if (peer.identity && peer.identity->pid == ::getpid()) ++identified;
                          return echo(request, peer);
                        });
  const std::size_t clients = ferry::test::scaled(8);
  const std::size_t requests = ferry::test::scaled(200);
  std::vector<std::thread> threads;
  for (std::size_t c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      auto client = under.connect();
      ASSERT_TRUE(client) << client.error().message();
      // Several requests in flight per client: replies must come back in order.
      for (std::size_t r = 0; r < requests; r += 4) {
        for (std::size_t k = r; k < std::min(r + 4, requests); ++k)
          ASSERT_TRUE(client->send_frame(bytes_of("c" + std::to_string(c) + "r" + std::to_string(k))));
        for (std::size_t k = r; k < std::min(r + 4, requests); ++k) {
          auto reply = client->receive_frame_for(kPatience);
          ASSERT_TRUE(reply) << reply.error().message();
          ASSERT_EQ(text_of(*reply), "echo:c" + std::to_string(c) + "r" + std::to_string(k));
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  const auto stats = under.server->stats();
  EXPECT_EQ(stats.requests, clients * requests);
  EXPECT_EQ(stats.accepted, clients);
  if (GetParam().kind == StreamKind::unix_stream) {
    EXPECT_EQ(identified.load(), static_cast<int>(clients * requests)) << "PeerInfo carries SO_PEERCRED";
  }
}

TEST_P(Concurrent, HostileClientsAreDisconnectedWhileWellBehavedOnesAreServed) {
  const std::size_t max_connections = 24;
  ServerUnderTest under(GetParam().kind, {.frames = {.max_frame = 64 * 1024},
                                          .max_connections = max_connections,
                                          .frame_timeout = 300ms,
                                          .workers = GetParam().workers});
  // Well-behaved clients connect first and keep asking throughout.
  std::atomic<bool> attacks_over{false};
  std::atomic<std::size_t> good_answers{0};
  std::vector<std::thread> good;
  for (int c = 0; c < 3; ++c) {
    good.emplace_back([&, c] {
      auto client = under.connect();
      ASSERT_TRUE(client) << client.error().message();
      std::size_t n = 0;
      while (!attacks_over.load()) {
        ASSERT_TRUE(round_trip(*client, "good" + std::to_string(c) + "-" + std::to_string(n++)));
        ++good_answers;
        std::this_thread::sleep_for(1ms);
      }
      for (int extra = 0; extra < 10; ++extra) ASSERT_TRUE(round_trip(*client, "after" + std::to_string(extra)));
    });
  }

  const std::size_t malformed = ferry::test::scaled(5);
  const std::size_t oversized = ferry::test::scaled(5);
  std::vector<std::thread> attackers;
  attackers.emplace_back([&] {
    for (std::size_t i = 0; i < malformed; ++i) {
      auto client = under.connect();
      ASSERT_TRUE(client);
      ASSERT_TRUE(client->stream().write_all(bytes_of("GET / HTTP/1.1\r\nHost: x\r\n\r\n")));
      EXPECT_TRUE(disconnected_by_server(*client)) << "malformed " << i;
    }
  });
  attackers.emplace_back([&] {
    for (std::size_t i = 0; i < oversized; ++i) {
      auto client = under.connect();
      ASSERT_TRUE(client);
      // Announces 1 GiB (and 64 KiB + 1 on odd rounds) and sends a little of it.
      const std::uint32_t announced = i % 2 == 0 ? (1u << 30) : 64 * 1024 + 1;
      ASSERT_TRUE(client->stream().write_all(ferry::frame_header(announced)));
      (void)client->stream().write_all_for(bytes_of("some of it"), 1s);
      EXPECT_TRUE(disconnected_by_server(*client)) << "oversized " << i;
    }
  });
  for (int slow = 0; slow < 2; ++slow) {
    attackers.emplace_back([&] {
      auto client = under.connect();
      ASSERT_TRUE(client);
      const auto header = ferry::frame_header(60'000);  // allowed, but it never completes
      // One byte every 20 ms, for ever; bounded so a broken server fails the test.
      bool cut_off = false;
      for (int i = 0; i < 1500 && !cut_off; ++i) {
        const std::byte next = i < 8 ? header[static_cast<std::size_t>(i)] : std::byte{'z'};
        if (!client->stream().write_all(std::span(&next, 1))) cut_off = true;
        std::array<std::byte, 1> probe{};
        auto read = client->stream().read_some_for(probe, 20ms);
        if (read && *read == 0) cut_off = true;
        if (!read && read.error().code() != errc::timed_out) cut_off = true;
      }
      EXPECT_TRUE(cut_off) << "a slow-loris client was never disconnected";
    });
  }
  for (auto& thread : attackers) thread.join();

  // A flood: more connections than the server takes; the extra ones are
  // closed at once, the held ones do not disturb the good clients.
  const std::size_t free_slots = max_connections - 3;  // the good clients hold 3
  const std::size_t flood = free_slots + ferry::test::scaled(80);
  const auto before = under.server->stats();
  std::vector<FramedStream> flooders;
  for (std::size_t i = 0; i < flood; ++i) {
    auto client = under.connect();
    if (client) flooders.push_back(std::move(*client));
  }
  const auto settled = ferry::deadline_after(kPatience);
  while (under.server->stats().accepted + under.server->stats().rejected < before.accepted + before.rejected + flooders.size() &&
         ferry::steady_clock::now() < settled)
    std::this_thread::sleep_for(5ms);
  const std::size_t rejected = under.server->stats().rejected - before.rejected;
  EXPECT_LE(under.server->connections(), max_connections);
  ASSERT_GT(flooders.size(), free_slots);
  EXPECT_GE(rejected, flooders.size() - free_slots);
  std::size_t ended = 0;
  while (ended < rejected && ferry::steady_clock::now() < settled) {
    ended = 0;
    for (auto& flooder : flooders) {
      std::array<std::byte, 1> probe{};
      auto read = flooder.stream().try_read_some(probe);
      if ((read && *read == 0) || (!read && read.error().code() == errc::peer_gone)) ++ended;
    }
    if (ended < rejected) std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(ended, rejected) << "every rejected connection sees end of stream";
  const std::size_t answers_during_flood = good_answers.load();
  while (good_answers.load() < answers_during_flood + 10 && ferry::steady_clock::now() < settled)
    std::this_thread::sleep_for(5ms);
  EXPECT_GE(good_answers.load(), answers_during_flood + 10) << "good clients are answered during the flood";
  flooders.clear();

  attacks_over = true;
  for (auto& thread : good) thread.join();
  // Once the flood left, new clients are served again.
  const auto fresh_deadline = ferry::deadline_after(kPatience);
  bool served = false;
  while (!served && ferry::steady_clock::now() < fresh_deadline) {
    auto client = under.connect();
    ASSERT_TRUE(client);
    auto sent = client->send_frame(bytes_of("fresh"));
    auto reply = client->receive_frame_for(kPatience);
    served = sent && reply && text_of(*reply) == "echo:fresh";
    if (!served) std::this_thread::sleep_for(10ms);  // a slot not yet freed: rejected, try again
  }
  EXPECT_TRUE(served);
  const auto stats = under.server->stats();
  EXPECT_GE(stats.closed_corrupt, malformed);
  EXPECT_GE(stats.closed_oversized, oversized);
  EXPECT_GE(stats.closed_timeout, 2u);
}

TEST_P(Concurrent, AThrowingHandlerClosesOnlyThatConnection) {
  ServerUnderTest under(GetParam().kind, {.workers = GetParam().workers},
                        [](std::span<const std::byte> request, const PeerInfo& peer) -> std::optional<Frame> {
                          if (text_of(request) == "throw") throw std::runtime_error("no");
                          return echo(request, peer);
                        });
  auto good = under.connect();
  auto bad = under.connect();
  ASSERT_TRUE(good && bad);
  ASSERT_TRUE(round_trip(*good, "one"));
  ASSERT_TRUE(bad->send_frame(bytes_of("throw")));
  EXPECT_TRUE(disconnected_by_server(*bad));
  ASSERT_TRUE(round_trip(*good, "two"));
  EXPECT_EQ(under.server->stats().handler_failures, 1u);
}

TEST_P(Concurrent, StopFinishesInFlightRequestsThenClosesEverything) {
  std::mutex mutex;
  std::condition_variable changed;
  bool entered = false, release = false;
  ServerUnderTest under(GetParam().kind, {.workers = GetParam().workers},
                        [&](std::span<const std::byte> request, const PeerInfo& peer) {
                          if (text_of(request) == "slow") {
                            std::unique_lock lock(mutex);
                            entered = true;
                            changed.notify_all();
                            changed.wait(lock, [&] { return release; });
                          }
                          return echo(request, peer);
                        });
  auto idle = under.connect();
  auto busy = under.connect();
  ASSERT_TRUE(idle && busy);
  ASSERT_TRUE(round_trip(*idle, "hello"));
  ASSERT_TRUE(busy->send_frame(bytes_of("slow")));
  {
    std::unique_lock lock(mutex);
    ASSERT_TRUE(changed.wait_for(lock, kPatience, [&] { return entered; }));
  }
  under.server->stop();
  // Without workers the event thread is in the handler and sees the stop
  // when it returns; with workers, wait until it stopped accepting.
  if (GetParam().workers > 0) {
    EXPECT_TRUE(disconnected_by_server(*idle)) << "an idle connection is closed at stop";
    auto refused = ferry::test::connect_to(GetParam().kind, under.server->listener(), 1s);
    EXPECT_FALSE(refused) << "no new connections after stop";
  }
  {
    std::lock_guard lock(mutex);
    release = true;
  }
  changed.notify_all();
  auto reply = busy->receive_frame_for(kPatience);
  ASSERT_TRUE(reply) << "the in-flight request is answered: " << reply.error().message();
  EXPECT_EQ(text_of(*reply), "echo:slow");
  EXPECT_TRUE(disconnected_by_server(*busy));
  EXPECT_TRUE(disconnected_by_server(*idle));
  under.loop.join();
  EXPECT_EQ(under.server->connections(), 0u);
  EXPECT_EQ(under.server->stats().requests, 2u);
}

INSTANTIATE_TEST_SUITE_P(Transport, Concurrent,
                         ::testing::Values(ServerCase{StreamKind::unix_stream, 0}, ServerCase{StreamKind::unix_stream, 2},
                                           ServerCase{StreamKind::tcp4, 0}, ServerCase{StreamKind::tcp4, 2}),
                         case_name);

// ---- iterative ---------------------------------------------------------------

struct IterativeUnderTest : Running<IterativeServer> {
  IterativeUnderTest(ferry::ServerOptions options, ferry::Handler handler)
      : Running(StreamKind::unix_stream, options, std::move(handler)) {}
};

TEST(IterativeServer, ServesClientsOneAfterAnother) {
  std::atomic<int> inside{0}, most_inside{0};
  std::mutex mutex;
  std::set<std::uint64_t> connections;
  IterativeUnderTest under({}, [&](std::span<const std::byte> request, const PeerInfo& peer) {
    const int now = ++inside;
    int seen = most_inside.load();
    while (now > seen && !most_inside.compare_exchange_weak(seen, now)) {
    }
    {
      std::lock_guard lock(mutex);
      connections.insert(peer.connection);
    }
    auto reply = echo(request, peer);
    --inside;
    return reply;
  });
  const std::size_t clients = ferry::test::scaled(4);
  const std::size_t requests = ferry::test::scaled(50);
  std::vector<std::thread> threads;
  for (std::size_t c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      auto client = under.connect();
      ASSERT_TRUE(client) << client.error().message();
      for (std::size_t r = 0; r < requests; ++r) ASSERT_TRUE(round_trip(*client, std::to_string(c) + "/" + std::to_string(r)));
    });  // leaving closes the connection: the next client's turn
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(most_inside.load(), 1);
  EXPECT_EQ(connections.size(), clients);
  EXPECT_EQ(under.server->stats().requests, clients * requests);
}

TEST(IterativeServer, DropsAMisbehavingClientAndServesTheNext) {
  IterativeUnderTest under({.frames = {.max_frame = 1024}, .frame_timeout = 200ms}, echo);
  {
    auto bad = under.connect();
    ASSERT_TRUE(bad);
    ASSERT_TRUE(bad->stream().write_all(bytes_of("garbage!")));
    EXPECT_TRUE(disconnected_by_server(*bad));
  }
  {
    auto huge = under.connect();
    ASSERT_TRUE(huge);
    ASSERT_TRUE(huge->stream().write_all(ferry::frame_header(1025)));
    EXPECT_TRUE(disconnected_by_server(*huge));
  }
  {
    auto slow = under.connect();
    ASSERT_TRUE(slow);
    const auto header = ferry::frame_header(10);
    ASSERT_TRUE(slow->stream().write_all(std::span(header).first(3)));
    EXPECT_TRUE(disconnected_by_server(*slow)) << "a frame never completed is timed out";
  }
  auto good = under.connect();
  ASSERT_TRUE(good);
  EXPECT_TRUE(round_trip(*good, "next"));
  const auto stats = under.server->stats();
  EXPECT_EQ(stats.closed_corrupt, 1u);
  EXPECT_EQ(stats.closed_oversized, 1u);
  EXPECT_EQ(stats.closed_timeout, 1u);
}

TEST(IterativeServer, AHandlerMayStopTheServerAfterItsReply) {
  IterativeServer* server = nullptr;
  IterativeUnderTest under({}, [&](std::span<const std::byte> request, const PeerInfo& peer) {
    if (text_of(request) == "bye") server->stop();
    return echo(request, peer);
  });
  server = under.server.get();
  auto client = under.connect();
  ASSERT_TRUE(client);
  ASSERT_TRUE(round_trip(*client, "hi"));
  ASSERT_TRUE(round_trip(*client, "bye"));
  EXPECT_TRUE(disconnected_by_server(*client));
  under.loop.join();
  auto after = under.connect();
  EXPECT_FALSE(after) << "the listener is closed once run() returned";
}

}  // namespace
