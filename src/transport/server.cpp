#include "ferry/transport/server.hpp"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

namespace ferry {

using detail::WaitLimit;

namespace detail {

ServerStats ServerCounters::snapshot() const noexcept {
  return {accepted.load(),       rejected.load(),       requests.load(),       closed_by_peer.load(),
          closed_corrupt.load(), closed_oversized.load(), closed_timeout.load(), handler_failures.load()};
}

void ServerCounters::count_close(const error& reason) noexcept {
  switch (reason.code()) {
    case errc::corrupt: ++closed_corrupt; break;
    case errc::limit_reached: ++closed_oversized; break;
    case errc::timed_out: ++closed_timeout; break;
    default: ++closed_by_peer; break;  // peer_gone, resets and other failures of the peer's socket
  }
}

}  // namespace detail

namespace {

result<Fd> make_event(std::string_view name) {
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return error::from_errno(errno, name, "eventfd");
  return Fd(fd);
}

void signal_event(const Fd& event) noexcept {
  const std::uint64_t one = 1;
  // EAGAIN only if the counter is saturated: it is signalled already.
  while (::write(event.get(), &one, sizeof one) < 0 && errno == EINTR) {
  }
}

void drain_event(const Fd& event) noexcept {
  std::uint64_t count = 0;
  while (::read(event.get(), &count, sizeof count) < 0 && errno == EINTR) {
  }
}

PeerInfo describe(const StreamSocket& socket, std::uint64_t number) {
  PeerInfo peer;
  peer.connection = number;
  if (auto identity = socket.peer_identity()) peer.identity = *identity;
  if (auto address = socket.peer_address()) peer.address = address->to_string();
  return peer;
}

// Runs the handler; nullopt + `failed` if it threw.
std::optional<Frame> call_handler(const Handler& handler, const Frame& request, const PeerInfo& peer, bool& failed) {
  failed = false;
  try {
    return handler(request, peer);
  } catch (...) {
    failed = true;
    return std::nullopt;
  }
}

// How often timeouts are checked: a quarter of the shortest, 1 ms .. 100 ms.
steady_clock::duration housekeeping_period(const ServerOptions& options) {
  auto shortest = options.frame_timeout;
  if (options.idle_timeout > steady_clock::duration::zero()) shortest = std::min(shortest, options.idle_timeout);
  return std::clamp<steady_clock::duration>(shortest / 4, std::chrono::milliseconds(1), std::chrono::milliseconds(100));
}

}  // namespace

// ---- IterativeServer ---------------------------------------------------------

IterativeServer::IterativeServer(Listener listener, Handler handler, ServerOptions options, Fd stop_event)
    : listener_(std::move(listener)), handler_(std::move(handler)), options_(options), stop_event_(std::move(stop_event)) {}

result<std::unique_ptr<IterativeServer>> IterativeServer::create(Listener listener, Handler handler,
                                                                 ServerOptions options) {
  auto event = make_event(listener.name());
  if (!event) return std::move(event).error();
  return std::unique_ptr<IterativeServer>(
      new IterativeServer(std::move(listener), std::move(handler), options, std::move(*event)));
}

void IterativeServer::stop() noexcept {
  stopping_.store(true);
  signal_event(stop_event_);
}

result<void> IterativeServer::run() {
  std::uint64_t number = 0;
  while (!stopping_.load()) {
    pollfd watched[2] = {{listener_.fd().get(), POLLIN, 0}, {stop_event_.get(), POLLIN, 0}};
    if (::poll(watched, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return error::from_errno(errno, listener_.name(), "poll");
    }
    if (watched[1].revents != 0) break;
    auto connection = listener_.try_accept();
    if (!connection) {
      const errc code = connection.error().code();
      if (code == errc::would_block) continue;
      if (code == errc::limit_reached || code == errc::no_space) {
        // Out of descriptors: the backlog waits; do not spin on it.
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      return std::move(connection).error();
    }
    ++counters_.accepted;
    serve(std::move(*connection), ++number);
  }
  listener_.close();
  return {};
}

void IterativeServer::serve(StreamSocket connection, std::uint64_t number) {
  const PeerInfo peer = describe(connection, number);
  FramedStream framed(std::move(connection), options_.frames);
  deadline last_request = steady_clock::now();
  // When the frame now arriving began; deadline::max(): none is arriving.
  deadline frame_started = deadline::max();
  const auto end_with = [&](const error& reason) { counters_.count_close(reason); };
  for (;;) {
    // stop(): the request in the handler was answered; nothing more is taken.
    if (stopping_.load()) return;
    // Handle every frame that is already here before waiting again.
    auto frame = framed.receive_ready_frame();
    if (frame) {
      frame_started = deadline::max();
      last_request = steady_clock::now();
      ++counters_.requests;
      bool failed = false;
      auto reply = call_handler(handler_, *frame, peer, failed);
      if (failed) {
        ++counters_.handler_failures;
        return;
      }
      if (reply) {
        // A client that does not take its reply in time is dropped.
        const deadline give_up = deadline_after(options_.frame_timeout);
        auto sent = framed.send_frame_until(*reply, give_up);
        if (sent && framed.pending_bytes() > 0) sent = framed.flush(WaitLimit::at(give_up));
        if (!sent) return end_with(sent.error());
      }
      continue;
    }
    if (frame.error().code() != errc::would_block) return end_with(frame.error());
    if (framed.mid_frame() && frame_started == deadline::max()) frame_started = steady_clock::now();

    deadline wake = deadline::max();
    if (frame_started != deadline::max()) wake = frame_started + options_.frame_timeout;
    else if (options_.idle_timeout > steady_clock::duration::zero()) wake = last_request + options_.idle_timeout;
    const auto now = steady_clock::now();
    if (now >= wake) return end_with(error(errc::timed_out, framed.stream().shared_name(),
                                         frame_started != deadline::max() ? "frame not completed in time" : "idle"));
    int timeout_ms = -1;
    if (wake != deadline::max())
      timeout_ms = static_cast<int>(std::min<std::int64_t>(
          std::chrono::ceil<std::chrono::milliseconds>(wake - now).count(), 60'000));
    pollfd watched[2] = {{framed.stream().fd().get(), POLLIN, 0}, {stop_event_.get(), POLLIN, 0}};
    if (::poll(watched, 2, timeout_ms) < 0 && errno != EINTR) return;
  }
}

// ---- ConcurrentServer --------------------------------------------------------

namespace {

struct Connection {
  FramedStream framed;
  PeerInfo peer;
  deadline last_request;
  std::optional<deadline> frame_started;   // a frame began to arrive
  std::optional<deadline> output_since;    // a reply waits for the client to read
  std::optional<Frame> unsent_reply;       // could not even start
  bool busy = false;                       // a worker has its request
  std::uint32_t interest = 0;              // registered epoll events; 0: not registered
};

struct Job {
  std::uint64_t id;
  Frame request;
  const PeerInfo* peer;  // stays valid: a busy connection is never closed
};

struct Done {
  std::uint64_t id;
  std::optional<Frame> reply;
  bool failed;
};

constexpr std::uint64_t kListenerKey = 1;
constexpr std::uint64_t kStopKey = 2;
constexpr std::uint64_t kDoneKey = 3;
constexpr std::uint64_t kFirstConnectionKey = 16;

}  // namespace

class ConcurrentServer::Loop {
 public:
  explicit Loop(ConcurrentServer& server) : server_(server), options_(server.options_) {}

  result<void> run() {
    const int epoll = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll < 0) return error::from_errno(errno, server_.listener_.name(), "epoll_create1");
    epoll_.reset(epoll);
    auto done_event = make_event(server_.listener_.name());
    if (!done_event) return std::move(done_event).error();
    done_event_ = std::move(*done_event);
    if (auto added = watch(server_.listener_.fd().get(), kListenerKey, EPOLLIN); !added) return added;
    if (auto added = watch(server_.stop_event_.get(), kStopKey, EPOLLIN); !added) return added;
    if (auto added = watch(done_event_.get(), kDoneKey, EPOLLIN); !added) return added;
    for (std::size_t i = 0; i < options_.workers; ++i) workers_.emplace_back([this] { work(); });
    auto outcome = loop();
    {
      std::lock_guard lock(jobs_mutex_);
      workers_quit_ = true;
    }
    jobs_ready_.notify_all();
    for (std::thread& worker : workers_) worker.join();
    connections_.clear();
    server_.open_connections_.store(0);
    server_.listener_.close();
    return outcome;
  }

 private:
  result<void> watch(int fd, std::uint64_t key, std::uint32_t events) {
    epoll_event interest{};
    interest.events = events;
    interest.data.u64 = key;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &interest) != 0)
      return error::from_errno(errno, server_.listener_.name(), "epoll_ctl add");
    return {};
  }

  // Registers what a connection waits for now: its requests, room for its
  // reply, or nothing while a worker has its request (a level-triggered
  // hang-up would otherwise wake the loop for ever).
  void update_interest(std::uint64_t id, Connection& connection) {
    std::uint32_t wanted = 0;
    if (!connection.busy) wanted = connection.output_since ? EPOLLOUT : EPOLLIN;
    if (wanted == connection.interest) return;
    const int fd = connection.framed.stream().fd().get();
    epoll_event interest{};
    interest.events = wanted;
    interest.data.u64 = id;
    const int operation = connection.interest == 0 ? EPOLL_CTL_ADD : wanted == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (::epoll_ctl(epoll_.get(), operation, fd, &interest) == 0) connection.interest = wanted;
  }

  void close(std::uint64_t id, const error* reason) {
    auto found = connections_.find(id);
    if (found == connections_.end()) return;
    if (reason) server_.counters_.count_close(*reason);
    // Closing the descriptor removes it from the epoll set.
    connections_.erase(found);
    server_.open_connections_.store(connections_.size());
  }

  void close_timed_out(std::uint64_t id, Connection& connection, const char* why) {
    const error reason(errc::timed_out, connection.framed.stream().shared_name(), why);
    close(id, &reason);
  }

  void accept_all() {
    for (;;) {
      auto accepted = server_.listener_.try_accept();
      if (!accepted) {
        if (accepted.error().code() != errc::would_block) {
          // Out of descriptors or the like: stop watching the listener until
          // the next housekeeping round instead of spinning on it.
          ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, server_.listener_.fd().get(), nullptr);
          accept_paused_ = true;
        }
        return;
      }
      if (connections_.size() >= options_.max_connections) {
        ++server_.counters_.rejected;
        continue;  // closed here: the client sees end of stream at once
      }
      ++server_.counters_.accepted;
      const std::uint64_t id = next_id_++;
      auto connection = std::make_unique<Connection>();
      connection->peer = describe(*accepted, id - kFirstConnectionKey + 1);
      connection->framed = FramedStream(std::move(*accepted), options_.frames);
      connection->last_request = steady_clock::now();
      Connection& added = *connection;
      connections_.emplace(id, std::move(connection));
      server_.open_connections_.store(connections_.size());
      update_interest(id, added);
    }
  }

  // Takes every complete request the connection has, until it must wait.
  void handle_input(std::uint64_t id, Connection& connection) {
    while (!connection.busy && !connection.output_since && !stopping_) {
      auto frame = connection.framed.receive_ready_frame();
      if (!frame) {
        if (frame.error().code() != errc::would_block) return close(id, &frame.error());
        if (connection.framed.mid_frame() && !connection.frame_started) connection.frame_started = steady_clock::now();
        break;
      }
      connection.frame_started.reset();
      connection.last_request = steady_clock::now();
      ++server_.counters_.requests;
      if (!workers_.empty()) {
        connection.busy = true;
        {
          std::lock_guard lock(jobs_mutex_);
          jobs_.push_back(Job{id, std::move(*frame), &connection.peer});
        }
        jobs_ready_.notify_one();
        break;
      }
      bool failed = false;
      auto reply = call_handler(server_.handler_, *frame, connection.peer, failed);
      if (!deliver(id, connection, std::move(reply), failed)) return;
    }
    update_interest(id, connection);
  }

  // Sends a handler's reply; false if the connection was closed.
  bool deliver(std::uint64_t id, Connection& connection, std::optional<Frame> reply, bool failed) {
    if (failed) {
      ++server_.counters_.handler_failures;
      close(id, nullptr);
      return false;
    }
    if (!reply) return true;
    auto sent = connection.framed.try_send_frame(*reply);
    if (!sent) {
      if (sent.error().code() != errc::would_block) {
        close(id, &sent.error());
        return false;
      }
      connection.unsent_reply = std::move(reply);
    }
    if (connection.unsent_reply || connection.framed.pending_bytes() > 0) connection.output_since = steady_clock::now();
    return true;
  }

  // The client has room again: push out what waits for it.
  void handle_output(std::uint64_t id, Connection& connection) {
    auto flushed = connection.framed.try_flush();
    if (flushed && connection.unsent_reply) {
      flushed = connection.framed.try_send_frame(*connection.unsent_reply);
      if (flushed) connection.unsent_reply.reset();
    }
    if (!flushed && flushed.error().code() != errc::would_block) return close(id, &flushed.error());
    if (!connection.unsent_reply && connection.framed.pending_bytes() == 0) {
      connection.output_since.reset();
      handle_input(id, connection);  // requests that arrived meanwhile
      return;
    }
    update_interest(id, connection);
  }

  void take_done() {
    drain_event(done_event_);
    std::deque<Done> finished;
    {
      std::lock_guard lock(jobs_mutex_);
      finished.swap(done_);
    }
    for (Done& each : finished) {
      auto found = connections_.find(each.id);
      if (found == connections_.end()) continue;
      Connection& connection = *found->second;
      connection.busy = false;
      if (!deliver(each.id, connection, std::move(each.reply), each.failed)) continue;
      if (connection.output_since) update_interest(each.id, connection);
      else handle_input(each.id, connection);
    }
  }

  void work() {
    for (;;) {
      Job job;
      {
        std::unique_lock lock(jobs_mutex_);
        jobs_ready_.wait(lock, [&] { return workers_quit_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      bool failed = false;
      auto reply = call_handler(server_.handler_, job.request, *job.peer, failed);
      {
        std::lock_guard lock(jobs_mutex_);
        done_.push_back(Done{job.id, std::move(reply), failed});
      }
      signal_event(done_event_);
    }
  }

  void housekeeping(deadline now) {
    if (accept_paused_ && !stopping_) {
      if (watch(server_.listener_.fd().get(), kListenerKey, EPOLLIN)) accept_paused_ = false;
    }
    std::vector<std::uint64_t> ids;
    ids.reserve(connections_.size());
    for (const auto& [id, connection] : connections_) ids.push_back(id);
    for (std::uint64_t id : ids) {
      Connection& connection = *connections_.at(id);
      if (connection.busy) continue;
      if (connection.output_since && now - *connection.output_since >= options_.frame_timeout) {
        close_timed_out(id, connection, "the client did not take its reply in time");
      } else if (stopping_ && !connection.output_since) {
        close(id, nullptr);  // nothing in flight any more
      } else if (connection.frame_started && now - *connection.frame_started >= options_.frame_timeout) {
        close_timed_out(id, connection, "frame not completed in time");
      } else if (options_.idle_timeout > steady_clock::duration::zero() && !connection.output_since &&
                 now - connection.last_request >= options_.idle_timeout) {
        close_timed_out(id, connection, "idle");
      }
    }
  }

  void begin_stop() {
    if (stopping_) return;
    stopping_ = true;
    stop_by_ = deadline_after(options_.shutdown_grace);
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, server_.listener_.fd().get(), nullptr);
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, server_.stop_event_.get(), nullptr);
    server_.listener_.close();  // new clients are refused from now on
  }

  result<void> loop() {
    const auto period = housekeeping_period(options_);
    const int period_ms = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(period).count());
    deadline next_housekeeping = deadline_after(period);
    std::vector<epoll_event> events(64);
    if (server_.stopping_.load()) begin_stop();
    for (;;) {
      if (stopping_ && (connections_.empty() || steady_clock::now() >= stop_by_)) return {};
      const int ready = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), period_ms);
      if (ready < 0 && errno != EINTR) return error::from_errno(errno, server_.listener_.name(), "epoll_wait");
      for (int i = 0; i < std::max(ready, 0); ++i) {
        const std::uint64_t key = events[i].data.u64;
        if (key == kListenerKey) {
          if (!stopping_) accept_all();
        } else if (key == kStopKey) {
          begin_stop();
        } else if (key == kDoneKey) {
          take_done();
        } else {
          auto found = connections_.find(key);
          if (found == connections_.end()) continue;
          Connection& connection = *found->second;
          if (connection.output_since) handle_output(key, connection);
          else handle_input(key, connection);
        }
      }
      const auto now = steady_clock::now();
      if (now >= next_housekeeping || stopping_) {
        housekeeping(now);
        next_housekeeping = now + period;
      }
    }
  }

  ConcurrentServer& server_;
  const ServerOptions options_;
  Fd epoll_;
  Fd done_event_;
  std::unordered_map<std::uint64_t, std::unique_ptr<Connection>> connections_;
  std::uint64_t next_id_ = kFirstConnectionKey;
  bool stopping_ = false;
  bool accept_paused_ = false;
  deadline stop_by_{};

  std::vector<std::thread> workers_;
  std::mutex jobs_mutex_;
  std::condition_variable jobs_ready_;
  std::deque<Job> jobs_;
  std::deque<Done> done_;
  bool workers_quit_ = false;
};

ConcurrentServer::ConcurrentServer(Listener listener, Handler handler, ServerOptions options, Fd stop_event)
    : listener_(std::move(listener)), handler_(std::move(handler)), options_(options), stop_event_(std::move(stop_event)) {}

ConcurrentServer::~ConcurrentServer() = default;

result<std::unique_ptr<ConcurrentServer>> ConcurrentServer::create(Listener listener, Handler handler,
                                                                   ServerOptions options) {
  if (options.max_connections == 0) return error(errc::invalid_argument, listener.name(), "max_connections is 0");
  auto event = make_event(listener.name());
  if (!event) return std::move(event).error();
  return std::unique_ptr<ConcurrentServer>(
      new ConcurrentServer(std::move(listener), std::move(handler), options, std::move(*event)));
}

result<void> ConcurrentServer::run() {
  Loop loop(*this);
  return loop.run();
}

void ConcurrentServer::stop() noexcept {
  stopping_.store(true);
  signal_event(stop_event_);
}

}  // namespace ferry
