// Servers for framed request/reply traffic over a stream Listener (UNIX or
// TCP), in the two designs of the OS model:
//
//   IterativeServer   one client at a time: accept, serve it until it leaves
//                     (or misbehaves), then the next. Others wait in the
//                     listen backlog. No threads.
//   ConcurrentServer  many clients at once: one event thread multiplexes every
//                     connection with epoll; the handler runs on that thread,
//                     or on a small worker pool (`workers`).
//
//   auto listener = ferry::UnixSocket::listen(path);
//   auto server = ferry::ConcurrentServer::create(std::move(*listener),
//       [](std::span<const std::byte> request, const ferry::PeerInfo& peer) -> std::optional<ferry::Frame> {
//         return ferry::Frame(request.begin(), request.end());            // echo
//       }, {.max_connections = 100});
//   std::thread loop([&] { server->get()->run(); });
//   ...
//   server->get()->stop();  loop.join();
//
// Each frame a client sends is one request; the handler's reply (if any) is
// sent back as one frame. Replies to one connection go out in the order of
// its requests (a connection has at most one request in a handler at a time).
//
// Defence: a client that sends a malformed header, announces a frame above
// `frames.max_frame`, takes longer than `frame_timeout` to complete a frame
// it started (a slow-loris sending a byte at a time), stays silent longer than
// `idle_timeout` (when set), or does not read its replies within
// `frame_timeout`, is disconnected and counted in stats(); the others are not
// disturbed. ConcurrentServer accepts at most `max_connections` at once and
// closes any further connection at once (counted as rejected), so a client
// sees end of stream instead of hanging in the backlog.
//
// Shutdown: stop() (from any thread, also from a handler) makes the server
// stop accepting and stop taking requests; requests already in a handler are
// finished and their replies written (for at most `shutdown_grace`); then
// every connection is closed and run() returns. Requests not yet taken (a
// frame half-received, or queued behind the one in the handler) are dropped
// with their connection: the client sees end of stream, never half a reply.
//
// Memory: each connection holds a 64 KiB read-ahead buffer once it has sent
// something, the frame being received (growing with what arrived, at most
// frames.max_frame) and at most one reply waiting for the client to read it.
//
// Thread-safety: run() once, from one thread; stop() and stats() from any.
// The handler is called from the event thread or a worker thread, never for
// two requests of one connection at once; with workers it must be thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "ferry/os/clock.hpp"
#include "ferry/os/error.hpp"
#include "ferry/os/fd.hpp"
#include "ferry/os/process.hpp"
#include "ferry/transport/framing.hpp"
#include "ferry/transport/socket.hpp"

namespace ferry {

struct ServerOptions {
  FrameOptions frames;
  /// ConcurrentServer: connections served at once; more are closed at once.
  std::size_t max_connections = 256;
  /// A frame that has begun to arrive must be complete within this; a reply
  /// must be taken by the client within this.
  steady_clock::duration frame_timeout = std::chrono::seconds(10);
  /// A connection with no request for this long is closed; zero: never.
  steady_clock::duration idle_timeout = steady_clock::duration::zero();
  /// After stop(): how long in-flight requests may take to finish.
  steady_clock::duration shutdown_grace = std::chrono::seconds(5);
  /// ConcurrentServer: handler threads; 0 runs the handler on the event thread.
  std::size_t workers = 0;
};

/// Who a request came from.
struct PeerInfo {
  /// Numbers connections in the order they were accepted, from 1.
  std::uint64_t connection = 0;
  /// UNIX sockets: the client's uid, gid and pid (SO_PEERCRED).
  std::optional<SenderIdentity> identity;
  /// The client's address ("127.0.0.1:51234"; "(unnamed)" for UNIX clients).
  std::string address;
};

/// Returns the reply frame, or nothing for no reply. An exception closes
/// that connection (counted as handler_failures).
using Handler = std::function<std::optional<Frame>(std::span<const std::byte> request, const PeerInfo& peer)>;

struct ServerStats {
  std::uint64_t accepted = 0;
  std::uint64_t rejected = 0;           ///< closed at once: over max_connections
  std::uint64_t requests = 0;           ///< frames handed to the handler
  std::uint64_t closed_by_peer = 0;     ///< the client closed or died
  std::uint64_t closed_corrupt = 0;     ///< malformed frame header
  std::uint64_t closed_oversized = 0;   ///< announced a frame above max_frame
  std::uint64_t closed_timeout = 0;     ///< frame, reply or idle timeout
  std::uint64_t handler_failures = 0;   ///< the handler threw
};

namespace detail {
struct ServerCounters {
  std::atomic<std::uint64_t> accepted{0}, rejected{0}, requests{0}, closed_by_peer{0}, closed_corrupt{0},
      closed_oversized{0}, closed_timeout{0}, handler_failures{0};
  [[nodiscard]] ServerStats snapshot() const noexcept;
  /// Counts why a connection ended, from the error that ended it.
  void count_close(const error& reason) noexcept;
};
}  // namespace detail

class IterativeServer {
 public:
  static result<std::unique_ptr<IterativeServer>> create(Listener listener, Handler handler, ServerOptions options = {});

  /// Serves until stop(); returns an error only if the server itself failed.
  result<void> run();
  void stop() noexcept;
  [[nodiscard]] ServerStats stats() const noexcept { return counters_.snapshot(); }
  [[nodiscard]] const Listener& listener() const noexcept { return listener_; }

 private:
  IterativeServer(Listener listener, Handler handler, ServerOptions options, Fd stop_event);
  void serve(StreamSocket connection, std::uint64_t number);

  Listener listener_;
  Handler handler_;
  ServerOptions options_;
  Fd stop_event_;
  std::atomic<bool> stopping_{false};
  detail::ServerCounters counters_;
};

class ConcurrentServer {
 public:
  static result<std::unique_ptr<ConcurrentServer>> create(Listener listener, Handler handler, ServerOptions options = {});
  ~ConcurrentServer();

  /// Runs the event loop (and the workers) until stop() and the drain end.
  result<void> run();
  void stop() noexcept;
  [[nodiscard]] ServerStats stats() const noexcept { return counters_.snapshot(); }
  /// Connections open now.
  [[nodiscard]] std::size_t connections() const noexcept { return open_connections_.load(); }
  [[nodiscard]] const Listener& listener() const noexcept { return listener_; }

 private:
  class Loop;
  ConcurrentServer(Listener listener, Handler handler, ServerOptions options, Fd stop_event);

  Listener listener_;
  Handler handler_;
  ServerOptions options_;
  Fd stop_event_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> open_connections_{0};
  detail::ServerCounters counters_;
};

}  // namespace ferry
