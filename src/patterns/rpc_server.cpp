// rpc::Server: the method table and the dispatch every transport shares,
// then the shm:// workers (leased requests from a mailbox) and the unix/tcp
// ones (a reader thread per connection, a pool running what they queue).
#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <list>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "ferry/messaging/channel.hpp"
#include "ferry/patterns/rpc.hpp"
#include "ferry/transport/framing.hpp"
#include "rpc_client_core.hpp"
#include "rpc_registry.hpp"
#include "rpc_server_core.hpp"
#include "rpc_wire.hpp"

namespace ferry::rpc {

namespace {

// ---------------------------------------------------------------------------
// shm://: every worker thread receives leased requests from the mailbox.

// The reply mailboxes one worker has open, by name.
class ReplyMailboxes {
 public:
  explicit ReplyMailboxes(std::string prefix) : prefix_(std::move(prefix)) {}

  // The caller's reply mailbox `name`: it must be one of this endpoint's and
  // owned by the caller, so a request cannot aim replies at anyone else.
  Mailbox* open(std::string_view name, uid_t caller) {
    if (!name.starts_with(prefix_) || name.size() == prefix_.size()) return nullptr;
    const auto found = open_.find(name);
    if (found != open_.end()) return found->second.owner == caller ? &found->second.mailbox : nullptr;
    constexpr std::size_t kMostOpen = 64;  // beyond: forget them all (callers that left are among them)
    if (open_.size() >= kMostOpen) open_.clear();
    auto mailbox = Mailbox::open(name, {.allow_foreign_owner = true});
    if (!mailbox) return nullptr;
    const uid_t owner = mailbox->stats().owner_uid;
    auto& entry = open_.emplace(std::string(name), Entry{std::move(*mailbox), owner}).first->second;
    return entry.owner == caller ? &entry.mailbox : nullptr;
  }
  void forget(std::string_view name) {
    if (const auto found = open_.find(name); found != open_.end()) open_.erase(found);
  }

 private:
  struct Entry {
    Mailbox mailbox;
    uid_t owner;
  };
  std::string prefix_;
  std::map<std::string, Entry, std::less<>> open_;
};

class ShmServer final : public Server::Impl {
 public:
  ShmServer(Endpoint endpoint, ServerOptions options, Mailbox requests, registry::Registry registry)
      : Impl(std::move(endpoint), options), requests_(std::move(requests)), registry_(std::move(registry)) {}

  static result<std::unique_ptr<Server::Impl>> make(const Endpoint& endpoint, const ServerOptions& options) {
    const MailboxOptions mailbox{.capacity = Capacity::bounded(options.queue_capacity, options.max_payload + wire::kMaxOverhead),
                                 .persistence = options.persistence,
                                 .mode = options.mode,
                                 .max_senders = 256};
    auto requests = Mailbox::open_or_create(endpoint.name, mailbox);  // several servers may start at once
    if (!requests) return std::move(requests).error();
    auto joined = registry::Registry::join(endpoint.name, options.persistence, options.mode);
    if (!joined) return std::move(joined).error();
    return std::unique_ptr<Server::Impl>(new ShmServer(endpoint, options, std::move(*requests), std::move(*joined)));
  }

 private:
  result<void> launch() override {
    if (auto listed = registry_.add_server(); !listed) return listed;
    for (std::size_t i = 0; i < std::max<std::size_t>(options_.threads, 1); ++i) {
      auto mailbox = Mailbox::open(endpoint_.name);
      if (!mailbox) return std::move(mailbox).error();
      threads_.emplace_back([this, mailbox = std::move(*mailbox)]() mutable { work(mailbox); });
    }
    return {};
  }
  void halted() noexcept override {
    {
      const std::scoped_lock lock(lanes_mutex_);
      for (Lane& lane : lanes_) {
        lane.thread.join();  // each sees stopping_ within kStopCheck
        lane.counters.add_to(counters_);
      }
      lanes_.clear();
    }
    registry_.remove_server();
  }

  void work(Mailbox& requests) {
    ReplyMailboxes replies(endpoint_.name + ".reply.");
    while (!stopping_.load(std::memory_order_relaxed)) {
      auto lease = requests.receive_leased_for(kStopCheck);
      if (lease) {
        serve(*lease, replies);
        (void)lease->ack();  // after the reply: a server dying before it leaves the request to another
      } else if (lease.error().code() != errc::timed_out) {
        std::this_thread::sleep_for(kStopCheck);  // a broken mailbox: do not spin on it
      }
    }
  }

  void serve(const Lease& lease, ReplyMailboxes& replies) {
    auto request = wire::decode(lease.data());
    if (!request || request->kind == wire::Kind::reply) {
      counters_.malformed.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    const SenderIdentity& caller = lease.sender();
    const registry::CallKey key{request->client_key, request->call_id, caller.uid};
    if (request->kind == wire::Kind::cancel) {
      counters_.cancels.fetch_add(1, std::memory_order_relaxed);
      registry_.cancel(key);
      return;
    }
    if (request->kind == wire::Kind::lane) {
      take_lane(*request, caller);
      return;
    }
    Mailbox* reply_box = replies.open(request->reply_to, caller.uid);
    if (reply_box == nullptr) {
      counters_.malformed.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    counters_.received.fetch_add(1, std::memory_order_relaxed);
    const auto reply = [&](std::span<const std::byte> bytes) {
      auto sent = reply_box->send_for(bytes, options_.reply_timeout);
      if (!sent) {
        counters_.replies_dropped.fetch_add(1, std::memory_order_relaxed);
        if (sent.error().code() != errc::timed_out) replies.forget(request->reply_to);
      }
    };
    if (request->payload.size() > options_.max_payload) {
      counters_.oversized.fetch_add(1, std::memory_order_relaxed);
      reply(wire::encode_reply(*request, error(errc::limit_reached, description(),
                                               "request of " + std::to_string(request->payload.size()) +
                                                   " bytes, max_payload is " + std::to_string(options_.max_payload))));
      return;
    }
    if (lease.delivery_count() > 1) {
      if (!request->idempotent()) {
        counters_.abandoned.fetch_add(1, std::memory_order_relaxed);
        reply(wire::encode_reply(*request, error(errc::peer_gone, description(),
                                                 "the server running the call died; not idempotent, so not run again")));
        return;
      }
      counters_.rerun.fetch_add(1, std::memory_order_relaxed);
    }
    const auto until = wire::deadline_of(*request);
    if (expired(until)) return;
    if (auto outcome = run_listed(*request, caller, until, lease.delivery_count())) {
      reply(wire::encode_reply(*request, *outcome));
    }
  }

  // Runs `request`, listed in the registry while it runs (ferry stat, and
  // cancels find it there); nothing if it was cancelled before it started.
  std::optional<result<Bytes>> run_listed(const wire::Message& request, const SenderIdentity& caller,
                                          const std::optional<deadline>& until, std::uint32_t deliveries) {
    const registry::CallKey key{request.client_key, request.call_id, caller.uid};
    const auto slot = registry_.publish_call(key, caller.pid, request.method);
    std::optional<result<Bytes>> answer;
    if (registry_.cancel_recorded(key)) {
      counters_.cancelled.fetch_add(1, std::memory_order_relaxed);
    } else {
      const CallContext context(request.method, caller, until, deliveries,
                                slot ? &registry_.cancelled_flag(*slot) : &kNeverCancelled);
      answer = run(request, context);
      registry_.count_handled();
    }
    if (slot) registry_.retire_call(*slot);
    return answer;
  }

  // A caller's offer of its own lane (rpc.hpp): taken if the lane is one of
  // this endpoint's, its caller runs as this server's user, and this server
  // has room; otherwise the caller keeps to the mailbox.
  void take_lane(const wire::Message& offer, const SenderIdentity& caller) {
    const std::string prefix = endpoint_.name + ".lane.";
    if (caller.uid != ::geteuid() || !offer.reply_to.starts_with(prefix) || offer.reply_to.size() == prefix.size()) {
      counters_.malformed.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    const std::scoped_lock lock(lanes_mutex_);
    lanes_.remove_if([this](Lane& lane) {
      if (!lane.done) return false;
      lane.thread.join();
      lane.counters.add_to(counters_);
      return true;
    });
    if (lanes_.size() >= options_.max_lanes) return;
    const std::string name(offer.reply_to);
    auto in = Channel::open(name + ".in");
    auto out = Channel::open(name + ".out");
    if (!in || !out) return;
    auto requests = in->receiver();
    auto replies = out->sender();
    if (!requests || !replies) return;  // taken by another server already
    counters_.lanes.fetch_add(1, std::memory_order_relaxed);
    Lane& lane = lanes_.emplace_back();
    lane.counters.alone = true;
    lane.thread = std::thread([this, &lane, caller, client_key = offer.client_key, requests = std::move(*requests),
                               replies = std::move(*replies)]() mutable {
      serve_lane(requests, replies, caller, client_key, lane.counters);
      lane.done = true;
    });
  }

  // One caller's calls, one at a time, until it leaves or the server stops,
  // listed in the registry (ferry stat) in a call slot the lane holds.
  void serve_lane(ChannelReceiver& requests, ChannelSender& replies, const SenderIdentity& caller,
                  std::uint64_t client_key, Counters& counters) {
    wire::Message hello;  // a reply to call 0: the caller may use the lane from now on
    hello.kind = wire::Kind::reply;
    hello.client_key = client_key;
    if (!replies.send(wire::encode(hello))) return;
    const auto slot = registry_.hold_call_slot({client_key, 0, caller.uid}, caller.pid);
    serve_lane_calls(requests, replies, caller, client_key, slot, counters);
    if (slot) registry_.retire_call(*slot);
  }

  // A request is taken (released) before it runs: one the caller sees
  // untaken was never run, and it can go to the mailbox instead.
  void serve_lane_calls(ChannelReceiver& requests, ChannelSender& replies, const SenderIdentity& caller,
                        std::uint64_t client_key, std::optional<std::size_t> slot, Counters& counters) {
    std::vector<std::byte> buffer(options_.max_payload + wire::kMaxOverhead);
    Bytes owned, scratch;  // where replies are made (Impl::run), reused from call to call
    // Made once: an optional made just before it is copied into each call's
    // context stalls the copy (its wide loads wait for the narrow stores).
    const std::optional<SenderIdentity> attested_caller = caller;
    std::string listed_method;  // what the held slot lists: rewritten only when it changes
    while (!stopping_.load(std::memory_order_relaxed)) {
      auto taken = requests.receive_until(buffer, coarse_deadline_after(kStopCheck));
      if (!taken) {
        if (taken.error().code() == errc::timed_out) continue;
        return;  // the caller left (peer_gone), or sent what no request can be
      }
      wire::Message call;
      if (!wire::decode_into(std::span(buffer).first(*taken), call) || call.kind != wire::Kind::request ||
          call.client_key != client_key) {
        counters.count(&Counters::malformed);
        continue;
      }
      counters.count(&Counters::received);
      // A call without a deadline (the usual one) gets the long-lived empty
      // one: its context copies that instead of the optional just returned.
      const std::optional<deadline> given = wire::deadline_of(call);
      const std::optional<deadline>& until = given ? given : kNoDeadline;
      if (expired(until, counters)) continue;
      // A lane's calls are synchronous: no one can cancel them.
      if (slot) {
        const bool same_method = call.method == listed_method;
        registry_.start_held_call(*slot, call.call_id, call.method, same_method);
        if (!same_method) listed_method = call.method;
      }
      const auto outcome =
          run(call, CallContext(call.method, attested_caller, until, 1, &kNeverCancelled), counters, owned, scratch);
      // Encoded straight into the ring; the registry learns the call ended
      // once the reply is on its way (off the caller's wait).
      std::string text;
      const wire::Message reply = wire::reply_to(call, outcome, text);
      const std::size_t size = wire::encoded_size(reply);
      auto room = reply_room(replies, size);
      if (room) wire::encode_into(reply, {*room, size});
      const bool sent = room && replies.commit(size);
      registry_.count_handled();
      if (slot) registry_.end_held_call(*slot);
      if (!room) {
        counters.count(&Counters::replies_dropped);
        if (room.error().code() == errc::timed_out) continue;
      }
      if (!sent) return;
    }
  }

  // Where a reply of `size` bytes goes; the caller may be slow to read its
  // last ones, but not for longer than reply_timeout. A pointer, not the
  // span: copying a span just returned in memory stalls as above.
  result<std::byte*> reply_room(ChannelSender& replies, std::size_t size) const {
    auto room = replies.try_reserve(size);
    if (!room) return std::move(room).error();
    if (*room) return (*room)->data();
    auto waited = replies.reserve_until(size, deadline_after(options_.reply_timeout));
    if (!waited) return std::move(waited).error();
    return waited->data();
  }

  struct Lane {
    std::thread thread;
    std::atomic<bool> done{false};
    Counters counters;  // counted alone by the lane's thread; added to counters_ when it ends
  };

  void add_other_counts(ServerStats& total) const noexcept override {
    const std::scoped_lock lock(lanes_mutex_);
    for (const Lane& lane : lanes_) {
      lane.counters.add_to(total);
      if (!lane.done.load(std::memory_order_relaxed)) ++total.open_lanes;
    }
  }

  Mailbox requests_;  // held from create() on: a process-persistent mailbox lives while someone has it open
  registry::Registry registry_;
  mutable std::mutex lanes_mutex_;
  std::list<Lane> lanes_;
};

// ---------------------------------------------------------------------------
// unix://, tcp://: a reader thread per connection drains it at once (so a
// cancel is seen even when many requests wait), workers run the requests.

struct Connection {
  explicit Connection(FramedStream framed, std::optional<SenderIdentity> peer) noexcept
      : stream(std::move(framed)), identity(peer) {}
  FramedStream stream;
  std::optional<SenderIdentity> identity;
  std::mutex write_mutex;
  bool broken = false;  // under write_mutex: write nothing more
  std::mutex calls_mutex;
  std::unordered_map<std::uint64_t, std::shared_ptr<std::atomic<std::uint32_t>>> calls;  // queued or running
};

struct Job {
  std::shared_ptr<Connection> connection;
  Frame frame;
  wire::Message request;  // views into frame
  std::optional<deadline> until;
  std::shared_ptr<std::atomic<std::uint32_t>> cancelled;
};

class StreamServer final : public Server::Impl {
 public:
  StreamServer(Endpoint endpoint, ServerOptions options, Listener listener)
      : Impl(std::move(endpoint), options), listener_(std::move(listener)) {}

  static result<std::unique_ptr<Server::Impl>> make(Listener listener, const ServerOptions& options) {
    const SocketAddress& address = listener.address();
    auto endpoint = Endpoint::parse(address.family() == AF_UNIX ? "unix://" + address.to_string()
                                                                : "tcp://" + address.to_string());
    if (!endpoint) return std::move(endpoint).error();
    return std::unique_ptr<Server::Impl>(new StreamServer(std::move(*endpoint), options, std::move(listener)));
  }

 private:
  struct Reader {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };

  result<void> launch() override {
    threads_.emplace_back([this] { accept_loop(); });
    for (std::size_t i = 0; i < std::max<std::size_t>(options_.threads, 1); ++i) {
      threads_.emplace_back([this] { work(); });
    }
    return {};
  }
  void halted() noexcept override { listener_.close(); }

  void accept_loop() {
    std::list<Reader> readers;
    const auto reap = [&readers](bool all) {
      for (auto reader = readers.begin(); reader != readers.end();) {
        if (!all && !reader->done->load()) {
          ++reader;
          continue;
        }
        reader->thread.join();
        reader = readers.erase(reader);
      }
    };
    while (!stopping_.load(std::memory_order_relaxed)) {
      reap(false);
      auto socket = listener_.accept_for(kStopCheck);
      if (!socket) {
        if (socket.error().code() != errc::timed_out) std::this_thread::sleep_for(kStopCheck);
        continue;
      }
      if (readers.size() >= options_.max_connections) {
        counters_.rejected.fetch_add(1, std::memory_order_relaxed);
        continue;  // closed here: the client sees end of stream
      }
      std::optional<SenderIdentity> identity;
      if (endpoint_.scheme == Endpoint::Scheme::unix_stream) {
        if (auto peer = socket->peer_identity()) identity = *peer;
      }
      auto connection = std::make_shared<Connection>(
          FramedStream(std::move(*socket), {.max_frame = options_.max_payload + wire::kMaxOverhead}), identity);
      auto done = std::make_shared<std::atomic<bool>>(false);
      readers.push_back({std::thread([this, connection, done] {
                           read_loop(connection);
                           done->store(true);
                         }),
                         done});
    }
    reap(true);
  }

  void read_loop(const std::shared_ptr<Connection>& connection) {
    while (!stopping_.load(std::memory_order_relaxed)) {
      auto frame = connection->stream.receive_frame_for(kStopCheck);
      if (!frame) {
        const errc code = frame.error().code();
        if (code == errc::timed_out) continue;
        if (code == errc::limit_reached) counters_.oversized.fetch_add(1, std::memory_order_relaxed);
        if (code == errc::corrupt) counters_.malformed.fetch_add(1, std::memory_order_relaxed);
        break;
      }
      if (!take(connection, std::move(*frame))) break;
    }
    // The stream ended or broke: replies to what is queued are not written,
    // and the connection closes once the last job holding it is done. On
    // stop() a handler still running writes its reply (queued ones do not run).
    if (stopping_.load(std::memory_order_relaxed)) return;
    const std::scoped_lock lock(connection->write_mutex);
    connection->broken = true;
  }

  // One frame from a connection; false closes the connection.
  bool take(const std::shared_ptr<Connection>& connection, Frame frame) {
    auto decoded = wire::decode(std::span<const std::byte>(frame.data(), frame.size()));
    if (!decoded || decoded->kind == wire::Kind::reply) {
      counters_.malformed.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    if (decoded->payload.size() > options_.max_payload) {
      counters_.oversized.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    const wire::Message request = *decoded;
    if (request.kind == wire::Kind::cancel) {
      counters_.cancels.fetch_add(1, std::memory_order_relaxed);
      const std::scoped_lock lock(connection->calls_mutex);
      if (const auto call = connection->calls.find(request.call_id); call != connection->calls.end()) {
        call->second->store(1, std::memory_order_release);
      }
      return true;
    }
    counters_.received.fetch_add(1, std::memory_order_relaxed);
    const auto until = wire::deadline_of(request);
    std::unique_lock lock(queue_mutex_);
    if (queue_.size() >= options_.max_queued) {
      lock.unlock();
      counters_.rejected.fetch_add(1, std::memory_order_relaxed);
      write_reply(*connection,
                  wire::encode_reply(request, error(errc::limit_reached, description(), "the request queue is full")));
      return true;
    }
    auto cancelled = std::make_shared<std::atomic<std::uint32_t>>(0);
    {
      const std::scoped_lock calls_lock(connection->calls_mutex);
      connection->calls[request.call_id] = cancelled;
    }
    queue_.push_back(Job{connection, std::move(frame), request, until, std::move(cancelled)});
    lock.unlock();
    queued_.notify_one();
    return true;
  }

  void work() {
    for (;;) {
      std::unique_lock lock(queue_mutex_);
      if (!queued_.wait_for(lock, kStopCheck, [this] { return !queue_.empty() || stopping_.load(); })) continue;
      if (queue_.empty()) return;  // stopping
      Job job = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      serve(job);
    }
  }

  void serve(Job& job) {
    Connection& connection = *job.connection;
    if (job.cancelled->load(std::memory_order_acquire) != 0) {
      counters_.cancelled.fetch_add(1, std::memory_order_relaxed);
    } else if (!expired(job.until) && !stopping_.load(std::memory_order_relaxed)) {
      const CallContext context(job.request.method, connection.identity, job.until, 1, job.cancelled.get());
      write_reply(connection, wire::encode_reply(job.request, run(job.request, context)));
    }
    const std::scoped_lock lock(connection.calls_mutex);
    connection.calls.erase(job.request.call_id);
  }

  void write_reply(Connection& connection, std::span<const std::byte> reply) {
    const std::scoped_lock lock(connection.write_mutex);
    if (!connection.broken && connection.stream.send_frame_for(reply, options_.reply_timeout)) return;
    connection.broken = true;
    counters_.replies_dropped.fetch_add(1, std::memory_order_relaxed);
  }

  Listener listener_;
  std::mutex queue_mutex_;
  std::condition_variable queued_;
  std::deque<Job> queue_;
};

}  // namespace

// ---------------------------------------------------------------------------

Server::Server(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Server::~Server() { stop(); }

result<std::unique_ptr<Server>> Server::create(std::string_view endpoint, const ServerOptions& options) {
  auto parsed = Endpoint::parse(endpoint);
  if (!parsed) return std::move(parsed).error();
  return create(*parsed, options);
}

namespace {
result<void> check(const ServerOptions& options, const std::string& where) {
  if (options.max_payload == 0 || options.max_payload > (std::size_t{1} << 30)) {
    return error(errc::invalid_argument, "rpc server at " + where, "max_payload from 1 byte to 1 GiB");
  }
  return {};
}
}  // namespace

result<std::unique_ptr<Server>> Server::create(const Endpoint& endpoint, const ServerOptions& options) {
  const std::string where = endpoint.to_string();
  if (auto checked = check(options, where); !checked) return std::move(checked).error();
  result<std::unique_ptr<Impl>> impl = error(errc::invalid_argument, "rpc server at " + where,
                                             "rpc serves shm://, unix://, tcp:// and nats:// endpoints");
  switch (endpoint.scheme) {
    case Endpoint::Scheme::shm: {
      if (!endpoint.name.empty() && endpoint.name.front() == '/') {
        return error(errc::invalid_argument, "rpc server at " + where,
                     "a file-system mailbox cannot be an rpc endpoint: use shm://NAME");
      }
      impl = ShmServer::make(endpoint, options);
      break;
    }
    case Endpoint::Scheme::unix_stream: {
      auto listener = UnixSocket::listen(endpoint.name, {.mode = options.mode});
      if (!listener) return std::move(listener).error();
      return create(std::move(*listener), options);
    }
    case Endpoint::Scheme::tcp: {
      auto listener = TcpSocket::listen(endpoint.name, endpoint.port);
      if (!listener) return std::move(listener).error();
      return create(std::move(*listener), options);
    }
    case Endpoint::Scheme::nats:
      impl = detail::nats_rpc().make_server != nullptr ? detail::nats_rpc().make_server(endpoint, options)
                                                       : detail::no_nats_rpc("rpc server at", endpoint);
      break;
    default: break;
  }
  if (!impl) return std::move(impl).error();
  return std::unique_ptr<Server>(new Server(std::move(*impl)));
}

result<std::unique_ptr<Server>> Server::create(Listener listener, const ServerOptions& options) {
  if (auto checked = check(options, listener.name()); !checked) return std::move(checked).error();
  auto impl = StreamServer::make(std::move(listener), options);
  if (!impl) return std::move(impl).error();
  return std::unique_ptr<Server>(new Server(std::move(*impl)));
}

result<void> Server::add(std::string_view method, Handler handler) { return impl_->add(method, std::move(handler)); }
result<void> Server::add_in_place(std::string_view method, InPlaceHandler handler) {
  return impl_->add_in_place(method, std::move(handler));
}
result<void> Server::start() { return impl_->start(); }
void Server::stop() noexcept { impl_->stop(); }
ServerStats Server::stats() const noexcept { return impl_->stats(); }
const Endpoint& Server::endpoint() const noexcept { return impl_->endpoint(); }

result<void> Server::destroy(std::string_view endpoint) {
  auto parsed = Endpoint::parse(endpoint);
  if (!parsed) return std::move(parsed).error();
  if (parsed->scheme != Endpoint::Scheme::shm) {
    return error(errc::invalid_argument, "rpc endpoint " + parsed->to_string(), "only shm:// endpoints are destroyed");
  }
  auto removed = Mailbox::destroy(parsed->name);
  auto registry_removed = Segment::destroy(registry::segment_name(parsed->name));
  if (!removed) return removed;
  if (!registry_removed && registry_removed.error().code() != errc::not_found) return registry_removed;
  return {};
}

}  // namespace ferry::rpc
