// unix://, tcp:// and pipe: endpoints: framed messages on byte streams, a
// second connection (or descriptor) for the urgent lane.
#include <fcntl.h>
#include <sys/epoll.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <deque>
#include <random>
#include <unordered_map>

#include "endpoint_internal.hpp"
#include "ferry/transport/framing.hpp"
#include "ferry/transport/socket.hpp"

namespace ferry::detail {
namespace {

constexpr std::size_t kMaxWireFrame = 0xFFFF'FFFFu;

result<FrameOptions> frame_options(const EndpointOptions& options, std::string_view object) {
  if (options.max_message > kMaxWireFrame - kEnvelopeSize) {
    return error(errc::invalid_argument, object, "max_message is beyond 4 GiB - 5 bytes");
  }
  return FrameOptions{.max_frame = options.max_message + kEnvelopeSize};
}

// A random token ties a sender's urgent connection to its normal one.
std::uint64_t new_token() {
  std::random_device source;
  return (std::uint64_t{source()} << 32) | source();
}

// Takes inherited descriptor `fd` for a pipe endpoint, checking it is open the right way.
result<ByteStream> adopt_lane(int fd, bool for_writing, std::string_view object) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return error::from_errno(errno, object, concat({"fd ", std::to_string(fd), " is not open"}));
  const int access = flags & O_ACCMODE;
  if (access != O_RDWR && access != (for_writing ? O_WRONLY : O_RDONLY)) {
    return error(errc::invalid_argument, object,
                 concat({"fd ", std::to_string(fd), " is not open for ", for_writing ? "writing" : "reading"}));
  }
  return ByteStream::adopt(fd, concat({object, " (fd ", std::to_string(fd), ")"}));
}

// Connects one lane of a unix or tcp sender and says hello on it.
result<FramedStream> connect_lane(const Endpoint& endpoint, const EndpointOptions& options, Lane lane,
                                  std::uint64_t token, std::string_view object) {
  auto frames = frame_options(options, object);
  if (!frames) return std::move(frames).error();
  const WaitLimit limit = WaitLimit::after(options.connect_timeout);
  auto socket = endpoint.scheme == Endpoint::Scheme::tcp ? TcpSocket::connect(endpoint.name, endpoint.port, limit)
                                                         : UnixSocket::connect(endpoint.name, limit);
  if (!socket) return std::move(socket).error().add_context(object);
  // A lane is only written. In blocking mode an unbounded send is one
  // system call that sleeps in the kernel while the socket is full, as a
  // plain blocking write; in non-blocking mode it came back, polled and sent
  // again (6-7% more CPU for a stream of 64 KiB messages over tcp). Sends
  // with a limit pass MSG_DONTWAIT (detail::dont_wait_unless_forever).
  if (const int flags = ::fcntl(socket->fd().get(), F_GETFL);
      flags < 0 || ::fcntl(socket->fd().get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
    return error::from_errno(errno, object, "fcntl F_SETFL (blocking mode)");
  }
  FramedStream framed(std::move(*socket), *frames);
  if (auto greeted = framed.send_frame(encode_hello(lane, token), limit); !greeted) return std::move(greeted).error();
  return framed;
}

class StreamSender final : public Sender {
 public:
  StreamSender(Endpoint endpoint, EndpointOptions options, std::uint64_t token)
      : endpoint_(std::move(endpoint)), options_(options), token_(token) {}
  ~StreamSender() override {
    // A try_ or timed send may have left the rest of a frame: it goes out now.
    for (FramedStream* lane : {&normal_, urgent_ ? &*urgent_ : nullptr}) {
      if (lane && lane->pending_bytes() != 0) (void)lane->flush_for(options_.connect_timeout);
    }
  }

  static result<std::unique_ptr<Sender>> open(const Endpoint& endpoint, const EndpointOptions& options) {
    auto sender = std::make_unique<StreamSender>(endpoint, options, new_token());
    const std::string object = sender->description();
    if (endpoint.scheme == Endpoint::Scheme::pipe) {
      auto frames = frame_options(options, object);
      if (!frames) return std::move(frames).error();
      auto normal = adopt_lane(endpoint.fd, true, object);
      if (!normal) return std::move(normal).error();
      sender->normal_ = FramedStream(std::move(*normal), *frames);
      if (endpoint.urgent_fd >= 0) {
        auto urgent = adopt_lane(endpoint.urgent_fd, true, object);
        if (!urgent) return std::move(urgent).error();
        sender->urgent_.emplace(std::move(*urgent), *frames);
      }
    } else {
      if (endpoint.port == 0 && endpoint.scheme == Endpoint::Scheme::tcp) {
        return error(errc::invalid_argument, object, "port 0: a sender needs the receiver's port");
      }
      auto normal = connect_lane(endpoint, options, Lane::normal, sender->token_, object);
      if (!normal) return std::move(normal).error();
      sender->normal_ = std::move(*normal);
    }
    return std::unique_ptr<Sender>(std::move(sender));
  }

  [[nodiscard]] const Endpoint& endpoint() const noexcept override { return endpoint_; }
  [[nodiscard]] std::size_t max_message() const noexcept override { return options_.max_message; }

 protected:
  result<void> send_checked(std::span<const std::byte> message, EndpointSendOptions options, WaitLimit limit) override {
    FramedStream* lane = &normal_;
    if (options.urgent) {
      auto urgent = urgent_lane();
      if (!urgent) return std::move(urgent).error();
      lane = *urgent;
    }
    const auto envelope = encode_envelope(options.priority);
    const std::span<const std::byte> parts[] = {envelope, message};
    return named(lane->send_frame(parts, limit));
  }

 private:
  // The urgent lane, connected on first use (for pipes: given or absent).
  result<FramedStream*> urgent_lane() {
    if (urgent_) return &*urgent_;
    if (endpoint_.scheme == Endpoint::Scheme::pipe) {
      return error(errc::unsupported, description(),
                   "this pipe has no urgent lane: give it a descriptor of its own (pipe:fd=N,M)");
    }
    auto lane = connect_lane(endpoint_, options_, Lane::urgent, token_, description());
    if (!lane) return std::move(lane).error().add_context("opening the urgent lane");
    urgent_.emplace(std::move(*lane));
    return &*urgent_;
  }

  Endpoint endpoint_;
  EndpointOptions options_;
  std::uint64_t token_;
  FramedStream normal_;
  std::optional<FramedStream> urgent_;
};

// Listens (unix, tcp) or reads inherited descriptors (pipe); one epoll set
// watches the listener and every connection. Urgent connections are read
// dry on every call before a normal message is handed out; normal ones give
// one frame each in turn, so a fast sender cannot starve the others and
// memory holds at most one frame per connection.
class StreamReceiver final : public Receiver {
 public:
  StreamReceiver(Endpoint endpoint, EndpointOptions options, Fd epoll, FrameOptions frames)
      : endpoint_(std::move(endpoint)), options_(options), epoll_(std::move(epoll)), frames_(frames),
        object_(endpoint_object("receiver at", endpoint_)) {}

  static result<std::unique_ptr<Receiver>> open(const Endpoint& endpoint, const EndpointOptions& options) {
    const std::string object = endpoint_object("receiver at", endpoint);
    auto frames = frame_options(options, object);
    if (!frames) return std::move(frames).error();
    Fd epoll(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll) return error::from_errno(errno, object, "epoll_create1");
    auto receiver = std::make_unique<StreamReceiver>(endpoint, options, std::move(epoll), *frames);
    if (auto opened = receiver->start(); !opened) return std::move(opened).error();
    return std::unique_ptr<Receiver>(std::move(receiver));
  }

  [[nodiscard]] const Endpoint& endpoint() const noexcept override { return endpoint_; }
  [[nodiscard]] ReceiverStats stats() const noexcept override { return stats_; }

 protected:
  // Events are collected before a normal message is handed out, so urgent
  // ones overtake (unless none can come: a pipe without an urgent lane).
  // Unless a message can be handed out without the kernel (one queued, or a
  // frame read ahead), the epoll_wait that collects them is the one that
  // blocks: epoll is level-triggered, so it returns at once when a
  // connection has bytes, and a message costs the raw calls' epoll_wait and
  // read, not a look, a read that finds nothing and a wait.
  result<EndpointMessage> receive_next(WaitLimit limit) override {
    const bool urgent_may_come = listener_.has_value() || endpoint_.urgent_fd >= 0;
    for (bool looked = false;;) {
      if (!urgent_.empty()) return pop(urgent_);
      if (looked || !urgent_may_come) {
        if (normal_.empty()) pull_normal(looked);
        if (!normal_.empty()) return pop(normal_);
      }
      if (!listener_ && connections_.empty()) return *gone_;
      int timeout = 0;  // only look: something may be ready to hand out
      if (normal_.empty() && !any_read_ahead()) {
        auto wait = wait_milliseconds(limit);
        if (wait) {
          timeout = *wait;
        } else if (looked) {
          return std::move(wait).error();
        }  // else the limit was reached before anything was looked at: look once
      }
      if (timeout != 0 && await_rest_of_frame()) {
        looked = true;
        continue;
      }
      if (auto polled = poll_events(timeout); !polled) return std::move(polled).error();
      looked = true;
    }
  }

 private:
  struct Connection {
    FramedStream framed;
    std::optional<SenderIdentity> identity;
    Lane lane = Lane::normal;
    bool greeted = false;  // hello seen (pipes need none)
    bool ready = false;    // listed in ready_
    std::uint64_t reported_in = 0;  // the last look (epoll_wait) that found it readable
    std::uint64_t token = 0;
    std::uint64_t origin = 0;
  };
  struct Origin {
    std::uint64_t number;
    std::size_t connections;
  };

  result<void> start() {
    if (endpoint_.scheme == Endpoint::Scheme::pipe) {
      gone_ = error(errc::peer_gone, object_, "every writer closed the pipe");
      for (const auto& [fd, lane] : {std::pair{endpoint_.fd, Lane::normal}, std::pair{endpoint_.urgent_fd, Lane::urgent}}) {
        if (fd < 0) continue;
        auto stream = adopt_lane(fd, false, object_);
        if (!stream) return std::move(stream).error();
        auto added = add_connection(Connection{FramedStream(std::move(*stream), frames_), std::nullopt, lane, true});
        if (!added) return std::move(added).error();
        (*added)->origin = 1;
      }
      return {};
    }
    ListenOptions listen_options;
    listen_options.mode = options_.mode;
    auto listener = endpoint_.scheme == Endpoint::Scheme::tcp
                        ? TcpSocket::listen(endpoint_.name, endpoint_.port, listen_options)
                        : UnixSocket::listen(endpoint_.name, listen_options);
    if (!listener) return std::move(listener).error().add_context(object_);
    listener_.emplace(std::move(*listener));
    if (endpoint_.scheme == Endpoint::Scheme::tcp) {
      endpoint_.port = listener_->port();
      object_ = endpoint_object("receiver at", endpoint_);
    }
    return watch(listener_->fd().get());
  }

  result<void> watch(int fd) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = fd;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) != 0) return error::from_errno(errno, object_, "epoll_ctl");
    return {};
  }

  result<Connection*> add_connection(Connection connection) {
    const int fd = connection.framed.stream().fd().get();
    if (auto watched = watch(fd); !watched) return std::move(watched).error();
    auto& slot = connections_[fd];
    slot = std::make_unique<Connection>(std::move(connection));
    return slot.get();
  }

  // Milliseconds epoll may wait for `limit`; would_block or timed_out once it is reached.
  result<int> wait_milliseconds(WaitLimit limit) const {
    if (limit.kind == WaitLimit::Kind::forever) return -1;
    const auto left = limit.until_time - steady_clock::now();
    if (limit.kind == WaitLimit::Kind::none || left <= steady_clock::duration::zero()) {
      return error(limit.reached_code(), object_, "no message");
    }
    const auto milliseconds = std::chrono::ceil<std::chrono::milliseconds>(left).count();
    return static_cast<int>(std::min<decltype(milliseconds)>(milliseconds, INT_MAX));
  }

  result<void> poll_events(int timeout) {
    constexpr int kMostEvents = 64;
    epoll_event events[kMostEvents];
    const int count = ::epoll_wait(epoll_.get(), events, kMostEvents, timeout);
    if (count < 0) {
      complete_look_ = false;
      if (errno == EINTR) return {};
      return error::from_errno(errno, object_, "epoll_wait");
    }
    ++look_;
    // With every slot used, more connections may be readable than it said.
    complete_look_ = count < kMostEvents;
    for (int i = 0; i < count; ++i) {
      const int fd = events[i].data.fd;
      if (listener_ && fd == listener_->fd().get()) {
        if (auto accepted = accept_all(); !accepted) return accepted;
      } else if (const auto found = connections_.find(fd); found != connections_.end()) {
        found->second->reported_in = look_;
        serve(*found->second);
      }
    }
    return {};
  }

  // A large frame came in part at full speed (frame_streaming_in): its rest
  // is microseconds away, so look for it for a while before sleeping. A
  // sleeping virtual CPU takes ~20 us to wake, and the sender's CPU pays
  // for waking it; a receiver woken once for a frame's first segment and
  // again for the rest made the tcp 64 KiB stream 1.2-1.35x the raw calls.
  // Only a peer sending kStreamingRead bytes at a time keeps us looking.
  // True when something came (or went) meanwhile.
  bool await_rest_of_frame() {
    const auto streaming = connections_.find(streaming_in_);
    streaming_in_ = -1;
    if (streaming == connections_.end() || !streaming->second->framed.frame_streaming_in()) return false;
    const auto until = steady_clock::now() + kRestOfFrameWait;
    do {
      if (!poll_events(0)) return true;  // let the blocking look report it
      if (!ready_.empty() || !urgent_.empty()) return true;
    } while (steady_clock::now() < until);
    return false;
  }
  static constexpr auto kRestOfFrameWait = std::chrono::microseconds(20);

  // True when a ready connection holds bytes read ahead: a frame may be
  // handed out without asking the kernel.
  bool any_read_ahead() const {
    return std::any_of(ready_.begin(), ready_.end(), [&](int fd) {
      const auto found = connections_.find(fd);
      return found != connections_.end() && found->second->framed.has_read_ahead();
    });
  }

  result<void> accept_all() {
    for (;;) {
      auto socket = listener_->try_accept();
      if (!socket) {
        if (socket.error().code() == errc::would_block) return {};
        return std::move(socket).error().add_context(object_);
      }
      ++stats_.accepted;
      std::optional<SenderIdentity> identity;
      if (endpoint_.scheme == Endpoint::Scheme::unix_stream) {
        if (auto attested = socket->peer_identity()) identity = *attested;
      }
      auto added = add_connection(Connection{FramedStream(std::move(*socket), frames_), identity});
      if (!added) return std::move(added).error();
      (*added)->reported_in = look_;  // new: as good as reported by this look
      serve(**added);  // its hello, and urgent messages, may be there already
    }
  }

  // Reads what a readable connection has: its hello, every urgent message;
  // a normal connection joins the ready list and gives frames in turn.
  void serve(Connection& connection) {
    if (!connection.greeted) {
      auto frame = connection.framed.receive_ready_frame();
      if (!frame) {
        if (frame.error().code() != errc::would_block) close(connection, frame.error());
        return;
      }
      const auto hello = decode_hello(*frame);
      if (!hello) return close(connection, error(errc::corrupt, object_, "the first frame is not a hello"));
      greet(connection, *hello);
    }
    if (connection.lane == Lane::urgent) {
      while (take_frame(connection, urgent_)) {
      }
    } else if (!connection.ready) {
      connection.ready = true;
      ready_.push_back(connection.framed.stream().fd().get());
    }
  }

  void greet(Connection& connection, const Hello& hello) {
    connection.greeted = true;
    connection.lane = hello.lane;
    connection.token = hello.token;
    auto [entry, fresh] = origins_.try_emplace(hello.token, Origin{next_origin_, 0});
    if (fresh) ++next_origin_;
    ++entry->second.connections;
    connection.origin = entry->second.number;
  }

  // One frame of `connection` into `queue`; false when none is complete
  // (or the connection was closed).
  bool take_frame(Connection& connection, std::deque<EndpointMessage>& queue) {
    auto frame = connection.framed.receive_ready_frame();
    if (!frame) {
      if (frame.error().code() != errc::would_block) close(connection, frame.error());
      return false;
    }
    const auto priority = decode_message(*frame);
    if (!priority) {
      close(connection, error(errc::corrupt, object_, "a frame that is not a message"));
      return false;
    }
    queue.emplace_back(std::move(*frame), kEnvelopeSize, connection.identity, *priority,
                       connection.lane == Lane::urgent, connection.origin);
    return true;
  }

  // One frame from each ready normal connection, in turn. `after_look`: an
  // epoll_wait came just before, so a connection it did not report has
  // nothing in the kernel (level-triggered) and is read only for what was
  // read ahead.
  void pull_normal(bool after_look) {
    const bool trust_look = after_look && complete_look_;
    for (std::size_t turns = ready_.size(); turns > 0; --turns) {
      const int fd = ready_.front();
      ready_.pop_front();
      const auto found = connections_.find(fd);
      if (found == connections_.end()) continue;
      Connection& connection = *found->second;
      if (trust_look && connection.reported_in != look_ && !connection.framed.has_read_ahead()) {
        connection.ready = false;  // epoll reports it again when bytes come
        continue;
      }
      // A connection known to be drained leaves the list until epoll reports
      // it again (level-triggered), saving a read that would find nothing.
      if (take_frame(connection, normal_) && connection.framed.may_have_more()) {
        ready_.push_back(fd);
      } else if (const auto still = connections_.find(fd); still != connections_.end()) {
        still->second->ready = false;
        if (still->second->framed.frame_streaming_in()) streaming_in_ = fd;
      }
    }
  }

  void close(Connection& connection, const error& reason) {
    switch (reason.code()) {
      case errc::corrupt: ++stats_.closed_malformed; break;
      case errc::limit_reached: ++stats_.closed_oversized; break;
      default:
        ++stats_.closed_by_peer;
        if (connection.framed.mid_frame()) ++stats_.closed_mid_message;
        break;
    }
    if (!listener_ && (connection.lane == Lane::normal || reason.code() != errc::peer_gone)) gone_ = reason;
    if (connection.greeted && connection.token != 0) {
      if (const auto origin = origins_.find(connection.token);
          origin != origins_.end() && --origin->second.connections == 0) {
        origins_.erase(origin);
      }
    }
    const int fd = connection.framed.stream().fd().get();
    (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
    connections_.erase(fd);
  }

  static EndpointMessage pop(std::deque<EndpointMessage>& queue) {
    EndpointMessage message = std::move(queue.front());
    queue.pop_front();
    return message;
  }

  Endpoint endpoint_;
  EndpointOptions options_;
  Fd epoll_;
  FrameOptions frames_;
  std::string object_;
  std::optional<Listener> listener_;  // none for pipes
  std::unordered_map<int, std::unique_ptr<Connection>> connections_;
  std::unordered_map<std::uint64_t, Origin> origins_;  // by hello token
  std::uint64_t next_origin_ = 1;
  std::deque<EndpointMessage> urgent_;
  std::deque<EndpointMessage> normal_;
  std::deque<int> ready_;  // normal connections that may hold a frame
  std::uint64_t look_ = 0;     // epoll_waits so far
  int streaming_in_ = -1;      // a connection whose large frame is arriving (await_rest_of_frame)
  bool complete_look_ = false;  // the last one reported every readable connection
  std::optional<error> gone_;  // pipes: why the last lane closed
  ReceiverStats stats_;
};

}  // namespace

result<std::unique_ptr<Sender>> open_stream_sender(const Endpoint& endpoint, const EndpointOptions& options) {
  return StreamSender::open(endpoint, options);
}

result<std::unique_ptr<Receiver>> open_stream_receiver(const Endpoint& endpoint, const EndpointOptions& options) {
  return StreamReceiver::open(endpoint, options);
}

}  // namespace ferry::detail
