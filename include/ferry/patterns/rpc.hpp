// Remote procedure calls (Mach's msg_rpc) over shm://, unix://, tcp:// and nats://:
// a Server serves named methods, a Client calls them; one call sends the
// request and receives its reply, routed back by a correlation id.
//
//   auto server = ferry::rpc::Server::create("shm://calc");
//   (*server)->add("add", [](const ferry::rpc::CallContext& call, const Pair& in) -> ferry::result<Sum> {
//     if (call.caller() && call.caller()->uid != 0) return ferry::error(ferry::errc::permission_denied, "add", "root only");
//     return Sum{in.a + in.b};
//   });
//   (*server)->start();                                   // worker threads serve until stop()
//
//   auto client = ferry::rpc::Client::connect("shm://calc");   // another process
//   auto sum = (*client)->call_for<Sum>("add", Pair{2, 3}, 1s);   // trivially copyable structs
//   auto bytes = (*client)->call("echo", std::as_bytes(std::span(text)));   // or raw bytes
//   auto pending = (*client)->call_async("slow", request);  // wait, poll (ready) or cancel it
//
// Without allocating: a method added with add_in_place() writes its reply
// into the server's room (InPlaceHandler), and call_into() copies the reply
// into the caller's buffer; typed methods are written in place. On a shm
// lane such a call allocates nothing on either side.
//
// Calls: call() waits for the reply for ever (but fails with peer_gone when
// every server is gone); call_for/call_until carry a deadline in the request.
// A server does not run a request whose deadline has passed; a caller whose
// deadline passes gets errc::timed_out, and the reply that comes later is
// discarded and counted (ClientStats::late_replies). Replies match calls by
// (client key, call id): threads of one process share one Client, and
// every process has its own key, so a reply never reaches another caller.
//
// Errors: a handler's error reaches the caller with its code and message;
// every error the server sent (also not_found for an unknown method, and
// peer_gone for a call whose server died) is marked remote: is_remote(e).
// A call its caller cancelled ends with errc::cancelled (not remote).
//
// Cancellation: PendingCall::cancel() ends the call at once for the caller
// and sends a cancel on the urgent lane; it overtakes the requests queued
// at the server. A request not yet started is then never run; a running
// handler sees CallContext::cancelled() turn true and may stop early.
//
// Concurrent servers: any number of server processes, each with a pool of
// threads, serve one endpoint; each request is handled by one of them.
// A server killed in the middle of a request makes that call fail with
// peer_gone, or, for a call marked idempotent, run again on another server.
//
// How each transport carries calls, and why:
//   shm://NAME  requests go into the Mailbox NAME, received with leases by
//      every server thread (the mailbox shares the load). A server that dies
//      holding a lease has its request redelivered with delivery count 2:
//      run again when the caller marked it idempotent, otherwise answered
//      with peer_gone. Each Client owns a reply Mailbox "NAME.reply.<pid>.<n>"
//      (process persistence, destroyed when the Client closes) that only its
//      own uid reads; servers reply only into a reply mailbox whose owner is
//      the request's attested sender, and a client accepts replies only from
//      the uid that owns NAME. Cancels are urgent messages in NAME: whichever
//      server takes one marks the call in the registry segment "NAME.rpc",
//      which every server checks before running a request and which a
//      running handler's cancelled() reads. The registry also lists the
//      servers and the calls in flight with their start times (ferry stat).
//      Lanes: a caller that calls from one thread at a time, to a server run
//      by its own user, offers at its first call a lane: two Channels
//      ("NAME.lane.<pid>.<n>.in" and ".out", process persistence, mode 0600)
//      that one server takes, serving them on a thread of its own
//      (ServerOptions::max_lanes). From the server's hello on, that caller's
//      synchronous calls go over the lane: Channel round trips, no mailbox,
//      no lease. Other threads' calls, asynchronous ones and cancels keep to
//      the mailbox. The caller's identity is the one the mailbox attested for
//      the offer (the request channel's sender role is held by that process).
//      A server that dies or stops ends the lane: a request it never took
//      (the channel says so) goes to the mailbox, one it took fails with
//      peer_gone unless idempotent (then the mailbox runs it again).
//   unix://PATH, tcp://HOST:PORT  one connection per Client carries requests
//      out and replies back (framed, many calls in flight, replies in any
//      order). Several servers share one listener: processes that inherited
//      it (Server::create(Listener, ...)) accept from the same kernel queue.
//      Cancels travel on the same connection rather than on a second one:
//      with a shared listener a second connection may be accepted by another
//      server process than the one holding the call. They still overtake,
//      because a server's reader thread drains its connection at once, never
//      waiting for handlers (queued requests wait in server memory, at most
//      ServerOptions::max_queued, beyond which limit_reached is the answer),
//      and acts on a cancel when it reads it. A dropped connection fails its
//      calls with peer_gone; idempotent ones are sent again on a new connection.
//
//   nats://SERVERS/NAME  (with the ferry::nats library linked) core NATS
//      request/reply: a request is published on ferry.rpc.NAME.USER with a
//      reply subject of the caller's own; the servers of NAME share them in
//      one queue group. A call with no server at all fails with peer_gone at
//      once (the server's "no responders" answer). Cancels go on
//      ferry.rpc.NAME.cancel.USER, which every server hears. Deadlines travel
//      as time left, as over tcp. Nothing is stored: a server that dies
//      mid-request leaves its caller to its deadline (or peer_gone when
//      every server is gone).
//
// Caller identity (CallContext::caller): shm from the Mailbox (kernel-attested
// sender), unix from SO_PEERCRED; tcp cannot attest one (std::nullopt); nats
// gives CallContext::user(), the NATS user the server's permissions attest.
//
// Deadlines on the wire: shm and unix carry the absolute CLOCK_MONOTONIC
// time (one machine, one clock), so time spent queued counts; tcp carries the
// time left when the request was sent, which the server counts from when it
// read the request (two machines share no clock).
//
// Wire format, version 1, the same on every transport (a mailbox message, or
// the payload of a FramedStream frame); integers little-endian:
//
//    0        1        2        3        4        5        6        7
//   +--------+--------+--------+--------+--------+--------+--------+--------+
//   | magic  |version |  kind  | flags  | method length   | status | 0      |
//   | 0xC7   |  0x01  |        |        | (u16, 1..255)   |        |        |
//   +--------+--------+--------+--------+--------+--------+--------+--------+
//   |                         call id (u64)                                 |
//   +-----------------------------------------------------------------------+
//   |                  deadline (u64 nanoseconds, 0 = none)                 |
//   +-----------------------------------------------------------------------+
//   |                         client key (u64)                              |
//   +--------+--------+--------+--------+--------+--------+--------+--------+
//   | reply-to length (u16)   | 0      | 0      | payload length (u32)      |
//   +--------+--------+--------+--------+--------+--------+--------+--------+
//   | method | reply-to (shm: the reply mailbox's name) | payload           |
//   +-----------------------------------------------------------------------+
//   kind: 1 request, 2 cancel, 3 reply, 4 lane (shm: reply-to names a
//   caller's own pair of Channels, below).  flags: bit 0 idempotent, bit 1 the
//   deadline is relative (tcp).  status (replies): 0 success, else the errc
//   of the remote error, whose message is the payload.  A reply carries no
//   method. A message is rejected (counted, and a stream's connection
//   closed) unless magic, version, kind, status and the zero bytes are as
//   drawn and 40 + the three lengths is exactly its size.
//
// Thread-safety: a Client is shared by any number of threads (one of the
// waiting callers receives replies for all: no extra thread). A Server's
// add() comes before start(); handlers run on its worker threads at once
// and must be thread-safe. stats() from any thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "ferry/messaging/mailbox.hpp"
#include "ferry/os/clock.hpp"
#include "ferry/os/error.hpp"
#include "ferry/os/process.hpp"
#include "ferry/transport/endpoint.hpp"
#include "ferry/transport/socket.hpp"

namespace ferry::rpc {

using Bytes = std::vector<std::byte>;

/// Requests and replies that travel as their bytes: trivially copyable, no pointers the other side could not follow.
template <class T>
concept Trivial = std::is_trivially_copyable_v<T> && !std::is_pointer_v<T> && !std::is_member_pointer_v<T>;

/// The longest method name.
inline constexpr std::size_t kMaxMethodName = 255;

/// True when `e` came from the server (a handler's error, unknown method, ...).
[[nodiscard]] bool is_remote(const error& e) noexcept;

/// What a handler knows about the call it serves.
class CallContext {
 public:
  [[nodiscard]] std::string_view method() const noexcept { return method_; }
  /// The caller as the kernel attests it (shm, unix); std::nullopt over tcp and nats.
  [[nodiscard]] const std::optional<SenderIdentity>& caller() const noexcept { return caller_; }
  /// nats: the NATS user the caller authenticated as, attested by the
  /// server's permissions (docs/nats.md); empty on the other transports.
  [[nodiscard]] std::string_view user() const noexcept { return user_; }
  /// When the caller stops waiting, on this machine's monotonic clock.
  [[nodiscard]] const std::optional<deadline>& until() const noexcept { return until_; }
  /// 1, or 2 and more when an earlier server died running it (idempotent calls only).
  [[nodiscard]] std::uint32_t attempt() const noexcept { return attempt_; }
  /// True once the caller cancelled the call (one atomic load; shm: of the registry's shared memory).
  [[nodiscard]] bool cancelled() const noexcept { return cancelled_->load(std::memory_order_acquire) != 0; }

  /// Made by the server for each call it runs.
  CallContext(std::string_view method, std::optional<SenderIdentity> caller, std::optional<deadline> until,
              std::uint32_t attempt, const std::atomic<std::uint32_t>* cancelled, std::string_view user = {}) noexcept
      : method_(method), caller_(caller), until_(until), attempt_(attempt), cancelled_(cancelled), user_(user) {}

 private:
  std::string_view method_;
  std::optional<SenderIdentity> caller_;
  std::optional<deadline> until_;
  std::uint32_t attempt_ = 1;
  const std::atomic<std::uint32_t>* cancelled_;
  std::string_view user_;
};

/// A method: the request's bytes in, the reply's bytes (or an error) out.
using Handler = std::function<result<Bytes>(const CallContext& call, std::span<const std::byte> request)>;
/// A method that writes its reply in place: into `reply` (max_payload bytes
/// the server thread reuses from call to call), returning how many of them
/// it wrote. Nothing is allocated for its calls on shm lanes.
using InPlaceHandler = std::function<result<std::size_t>(const CallContext& call, std::span<const std::byte> request,
                                                         std::span<std::byte> reply)>;

struct ServerOptions {
  /// Handler threads in this process.
  std::size_t threads = 1;
  /// The largest request or reply payload.
  std::size_t max_payload = std::size_t{64} << 10;
  /// shm: requests the mailbox holds before callers wait; its mode (write =
  /// may call) and persistence (process: removed with the last server and client).
  std::size_t queue_capacity = 64;
  mode_t mode = 0600;
  Persistence persistence = Persistence::process;
  /// shm: how long a reply may wait for room in a caller's reply mailbox
  /// before it is dropped (counted): a caller that stopped reading must not stall servers.
  steady_clock::duration reply_timeout = std::chrono::seconds(2);
  /// unix, tcp: requests read and not yet started, over all connections;
  /// more are answered with limit_reached.
  std::size_t max_queued = 65536;
  /// unix, tcp: connections served at once; more are closed.
  std::size_t max_connections = 256;
  /// shm: callers this process serves on lanes of their own (a thread
  /// each); the offers of more are left for other servers or declined.
  std::size_t max_lanes = 16;
};

struct ServerStats {
  std::uint64_t received = 0;   ///< requests taken from the transport
  std::uint64_t handled = 0;    ///< handlers run to the end
  std::uint64_t failed = 0;     ///< of those: the handler returned an error
  std::uint64_t unknown_method = 0;
  std::uint64_t expired = 0;    ///< not run: the deadline had passed
  std::uint64_t cancels = 0;    ///< cancel messages taken
  std::uint64_t cancelled = 0;  ///< requests not run because they were cancelled
  std::uint64_t rerun = 0;      ///< idempotent requests run again after a server died
  std::uint64_t abandoned = 0;  ///< not run again after a server died: answered with peer_gone
  std::uint64_t malformed = 0;  ///< messages that fail the wire format's checks
  std::uint64_t oversized = 0;  ///< larger than max_payload (streams: connection closed)
  std::uint64_t rejected = 0;   ///< answered limit_reached (queue full) or connections over the limit
  std::uint64_t replies_dropped = 0;  ///< the caller was gone or did not take its reply
  std::uint64_t lanes = 0;            ///< shm: callers taken on lanes of their own, ever
  std::uint64_t open_lanes = 0;       ///< shm: of those, the ones whose lane is open now
};

class Server {
 public:
  /// Serves at `endpoint` (shm://NAME, unix://PATH, tcp://HOST:PORT):
  /// creates (or joins) the mailbox, or listens. Errors: invalid_argument
  /// (other schemes, options), those of Mailbox::create/open and listen.
  static result<std::unique_ptr<Server>> create(std::string_view endpoint, const ServerOptions& options = {});
  static result<std::unique_ptr<Server>> create(const Endpoint& endpoint, const ServerOptions& options = {});
  /// Serves the connections of `listener`, which other processes may share
  /// (made before fork, or handed over as a descriptor): each connection is
  /// accepted by one of them.
  static result<std::unique_ptr<Server>> create(Listener listener, const ServerOptions& options = {});

  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Registers a method. Errors: invalid_argument (empty or longer than
  /// kMaxMethodName, already registered, or the server was started).
  result<void> add(std::string_view method, Handler handler);
  /// Registers a method that writes its reply in place; errors as add().
  result<void> add_in_place(std::string_view method, InPlaceHandler handler);
  /// A method taking and returning trivially copyable structs (written in
  /// place); a request of another size is invalid_argument for the caller.
  template <Trivial Request, class Function>
    requires std::invocable<Function&, const CallContext&, const Request&>
  result<void> add(std::string_view method, Function function);

  /// Starts the worker threads. Errors: invalid_argument (started already), system (threads).
  result<void> start();
  /// Stops taking requests, lets running handlers finish, joins the threads.
  /// Requests still queued stay for another server (shm) or are dropped with
  /// their connection (unix, tcp: their callers see peer_gone).
  void stop() noexcept;

  [[nodiscard]] ServerStats stats() const noexcept;
  /// Where it serves; a tcp port 0 is replaced by the bound one.
  [[nodiscard]] const Endpoint& endpoint() const noexcept;

  /// Removes a shm:// endpoint's mailbox and registry (kernel persistence).
  static result<void> destroy(std::string_view endpoint);

  class Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

struct ClientOptions {
  /// The largest request or reply payload (as the server's max_payload).
  std::size_t max_payload = std::size_t{64} << 10;
  /// unix, tcp: how long connecting may take.
  steady_clock::duration connect_timeout = std::chrono::seconds(5);
  /// shm: replies the reply mailbox holds.
  std::size_t reply_capacity = 64;
  /// shm: call a server run by another user (its mailbox is then opened although foreign-owned).
  bool allow_foreign_owner = false;
  /// shm: offer a server of the same user a lane of this caller's own (see above).
  bool lanes = true;
};

struct CallOptions {
  /// Safe to run twice: after a server died, run it on another instead of failing with peer_gone.
  bool idempotent = false;
};

struct ClientStats {
  std::uint64_t calls = 0;         ///< requests sent (retries included)
  std::uint64_t replies = 0;       ///< replies that completed a call
  std::uint64_t timed_out = 0;     ///< calls that reached their deadline
  std::uint64_t cancelled = 0;
  std::uint64_t retries = 0;       ///< idempotent calls sent again after their server died
  std::uint64_t late_replies = 0;  ///< replies to calls that had ended (timed out, cancelled): discarded
  std::uint64_t foreign_replies = 0;  ///< shm: replies not from the server's uid, or malformed: discarded
  std::uint64_t lane_calls = 0;       ///< shm: calls that went over this caller's own lane
};

namespace detail {
class ClientCore;
struct PendingState;
}  // namespace detail

/// A call in flight: wait for it, poll it, or cancel it. Dropping a call that
/// has not completed cancels it.
class PendingCall {
 public:
  PendingCall(PendingCall&&) noexcept;
  PendingCall& operator=(PendingCall&&) noexcept;
  ~PendingCall();

  /// True once the reply (or the failure) is in; never waits.
  [[nodiscard]] bool ready();
  /// Waits until ready, or until `until`: true if ready.
  bool wait_until(deadline until);
  bool wait_for(steady_clock::duration timeout) { return wait_until(deadline_after(timeout)); }
  /// The outcome, waiting for it if need be (the call's deadline bounds the wait).
  result<Bytes> get();
  /// Ends the call for this caller now (get() then fails with errc::cancelled) and asks the server to drop it.
  void cancel() noexcept;
  /// The correlation id of this call (unique per Client).
  [[nodiscard]] std::uint64_t id() const noexcept;

 private:
  friend class Client;
  PendingCall(std::shared_ptr<detail::ClientCore> core, std::shared_ptr<detail::PendingState> state) noexcept;
  std::shared_ptr<detail::ClientCore> core_;
  std::shared_ptr<detail::PendingState> state_;
};

class Client {
 public:
  /// Connects to a server at `endpoint`. Errors: invalid_argument (scheme),
  /// not_found (no such mailbox, nobody listening), permission_denied, timed_out.
  static result<std::unique_ptr<Client>> connect(std::string_view endpoint, const ClientOptions& options = {});
  static result<std::unique_ptr<Client>> connect(const Endpoint& endpoint, const ClientOptions& options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  /// Calls `method` and waits for its reply. Errors: the server's (is_remote),
  /// peer_gone (no server, or it died running the call), invalid_argument
  /// (method name, request larger than max_payload), timed_out (call_for/until).
  result<Bytes> call(std::string_view method, std::span<const std::byte> request, CallOptions options = {});
  result<Bytes> call_for(std::string_view method, std::span<const std::byte> request, steady_clock::duration timeout,
                         CallOptions options = {}) {
    return call_until(method, request, deadline_after(timeout), options);
  }
  result<Bytes> call_until(std::string_view method, std::span<const std::byte> request, deadline until,
                           CallOptions options = {});
  /// Calls `method` and copies its reply into `reply`: its size. Nothing is
  /// allocated when the call goes on this caller's shm lane. Errors as
  /// call(), and limit_reached when the reply does not fit (the call ran; its
  /// reply is dropped).
  result<std::size_t> call_into(std::string_view method, std::span<const std::byte> request, std::span<std::byte> reply,
                                CallOptions options = {}) {
    return call_into_until(method, request, reply, deadline::max(), options);
  }
  result<std::size_t> call_into_until(std::string_view method, std::span<const std::byte> request,
                                      std::span<std::byte> reply, deadline until, CallOptions options = {});
  /// Sends the request and returns at once. Errors: those of sending.
  result<PendingCall> call_async(std::string_view method, std::span<const std::byte> request,
                                 std::optional<deadline> until = std::nullopt, CallOptions options = {});

  /// Typed calls: the request's bytes go out, and a reply of another size than Reply is invalid_argument.
  template <Trivial Reply, Trivial Request>
  result<Reply> call(std::string_view method, const Request& request, CallOptions options = {}) {
    return as<Reply>(method, call(method, bytes_of(request), options));
  }
  template <Trivial Reply, Trivial Request>
  result<Reply> call_for(std::string_view method, const Request& request, steady_clock::duration timeout,
                         CallOptions options = {}) {
    return as<Reply>(method, call_for(method, bytes_of(request), timeout, options));
  }

  [[nodiscard]] ClientStats stats() const noexcept;
  [[nodiscard]] const Endpoint& endpoint() const noexcept;

  /// The payload of a reply as a trivially copyable struct; invalid_argument if the size differs.
  template <Trivial Value>
  static result<Value> as(std::string_view method, result<Bytes> reply);
  template <Trivial Value>
  static std::span<const std::byte> bytes_of(const Value& value) noexcept {
    return std::as_bytes(std::span(&value, 1));
  }

 private:
  explicit Client(std::shared_ptr<detail::ClientCore> core) noexcept;
  std::shared_ptr<detail::ClientCore> core_;
};

/// What `ferry stat` shows of a shm:// rpc endpoint (its registry segment).
struct EndpointStatus {
  struct ServerEntry {
    pid_t pid = 0;
    bool alive = false;
    std::uint64_t started_ns = 0;  ///< wall clock
    std::uint64_t handled = 0;
  };
  struct CallEntry {
    pid_t server_pid = 0;
    pid_t caller_pid = 0;
    uid_t caller_uid = 0;
    std::uint64_t call_id = 0;
    std::string method;
    std::uint64_t started_ns = 0;  ///< wall clock
    bool cancelled = false;
  };
  std::vector<ServerEntry> servers;
  std::vector<CallEntry> calls;  ///< in flight now
};
/// Reads the registry of the shm:// endpoint `name` (not_found: no rpc server ever served it).
result<EndpointStatus> inspect(std::string_view name);

namespace detail {
error size_error(std::string_view method, std::string_view what, std::size_t size, std::size_t expected);
/// limit_reached: method `method` replied `size` bytes, more than max_payload.
error reply_too_large(std::string_view method, std::size_t size, std::size_t max_payload);
}  // namespace detail

template <Trivial Value>
result<Value> Client::as(std::string_view method, result<Bytes> reply) {
  if (!reply) return std::move(reply).error();
  if (reply->size() != sizeof(Value)) return detail::size_error(method, "reply", reply->size(), sizeof(Value));
  Value value;
  std::memcpy(&value, reply->data(), sizeof(Value));
  return value;
}

template <Trivial Request, class Function>
  requires std::invocable<Function&, const CallContext&, const Request&>
result<void> Server::add(std::string_view method, Function function) {
  using Outcome = std::invoke_result_t<Function&, const CallContext&, const Request&>;
  using Reply = typename Outcome::value_type;
  static_assert(Trivial<Reply>, "a typed method returns result<R> with R trivially copyable");
  const std::string name(method);
  return add_in_place(method, [name, function = std::move(function)](
                                  const CallContext& call, std::span<const std::byte> bytes,
                                  std::span<std::byte> room) mutable -> result<std::size_t> {
    if (bytes.size() != sizeof(Request)) return detail::size_error(name, "request", bytes.size(), sizeof(Request));
    Request request;
    std::memcpy(&request, bytes.data(), sizeof(Request));
    Outcome reply = function(call, request);
    if (!reply) return std::move(reply).error();
    if (room.size() < sizeof(Reply)) return detail::reply_too_large(name, sizeof(Reply), room.size());
    std::memcpy(room.data(), &*reply, sizeof(Reply));
    return sizeof(Reply);
  });
}

}  // namespace ferry::rpc
