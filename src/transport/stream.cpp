#include "ferry/transport/stream.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <ctime>

namespace ferry {

namespace detail {

result<void> wait_ready(int fd, short events, WaitLimit limit, std::string_view object, std::string_view waiting_for) {
  const auto reached = [&] { return error(limit.reached_code(), object, std::string(waiting_for)); };
  if (limit.kind == WaitLimit::Kind::none) return reached();
  for (;;) {
    timespec remaining{};
    timespec* timeout = nullptr;
    if (limit.kind == WaitLimit::Kind::until) {
      const auto left = limit.until_time - steady_clock::now();
      if (left <= steady_clock::duration::zero()) return reached();
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
      remaining.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
      remaining.tv_nsec = static_cast<long>(ns % 1'000'000'000);
      timeout = &remaining;
    }
    pollfd watched{fd, events, 0};
    const int ready = ::ppoll(&watched, 1, timeout, nullptr);
    if (ready > 0) return {};  // POLLERR/POLLHUP too: the next call reports them
    if (ready < 0 && errno != EINTR) return error::from_errno(errno, object, "ppoll");
  }
}

int dont_wait_unless_forever(WaitLimit limit) noexcept {
  return limit.kind == WaitLimit::Kind::forever ? 0 : MSG_DONTWAIT;
}

}  // namespace detail

namespace {

using detail::WaitLimit;

// What a pipe's read of 0 bytes meant, looked at right after it.
enum class EmptyRead : std::uint8_t { end_of_stream, data_came, nothing_yet };

// A FIFO's writers came and went (POLLHUP): end of stream, unless one of them
// wrote between the read and this look (POLLIN too: read again). A FIFO that
// no writer has opened yet reads 0 too, but that is "nothing yet".
EmptyRead after_empty_read(int fd) {
  pollfd watched{fd, POLLIN, 0};
  if (::poll(&watched, 1, 0) != 1) return EmptyRead::nothing_yet;
  if ((watched.revents & POLLIN) != 0) return EmptyRead::data_came;
  return (watched.revents & POLLHUP) != 0 ? EmptyRead::end_of_stream : EmptyRead::nothing_yet;
}

#ifndef RWF_NOSIGNAL
#define RWF_NOSIGNAL 0x00000100  // Linux 6.18's uapi/linux/fs.h; older headers lack it
#endif

std::atomic<detail::PipeWriteGuard> g_pipe_write_guard{detail::PipeWriteGuard::write_flag};

// write() to a pipe without readers raises SIGPIPE, whose default action
// ends the process. Since Linux 6.18 pwritev2's RWF_NOSIGNAL is for pipes
// what MSG_NOSIGNAL is for sockets. Before it, there was no such flag, and
// the kernel directs that SIGPIPE at the writing thread, so: block SIGPIPE in
// this thread, write, and if the write failed with EPIPE take the SIGPIPE it
// raised off the pending set with a zero-timeout sigtimedwait, then restore
// the mask. A SIGPIPE that was pending before (if the caller already blocks
// it) is left for the caller. The process-wide disposition is never touched,
// so other threads and other code see SIGPIPE exactly as they set it up.
ssize_t write_pipe_masking_sigpipe(int fd, const iovec* pieces, int count) {
  sigset_t sigpipe_only;
  sigemptyset(&sigpipe_only);
  sigaddset(&sigpipe_only, SIGPIPE);
  sigset_t old_mask;
  pthread_sigmask(SIG_BLOCK, &sigpipe_only, &old_mask);
  const bool caller_blocks = sigismember(&old_mask, SIGPIPE) == 1;
  bool pending_before = false;
  if (caller_blocks) {
    // Only a thread that already blocks it can have a SIGPIPE waiting.
    sigset_t pending;
    sigpending(&pending);
    pending_before = sigismember(&pending, SIGPIPE) == 1;
  }
  const ssize_t written = ::writev(fd, pieces, count);
  const int saved_errno = errno;
  if (written < 0 && saved_errno == EPIPE && !pending_before) {
    const timespec no_wait{0, 0};
    while (sigtimedwait(&sigpipe_only, nullptr, &no_wait) < 0 && errno == EINTR) {
    }
  }
  if (!caller_blocks) pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  errno = saved_errno;
  return written;
}

ssize_t write_pipe_without_sigpipe(int fd, const iovec* pieces, int count) {
  if (g_pipe_write_guard.load(std::memory_order_relaxed) == detail::PipeWriteGuard::write_flag) {
    const ssize_t written = ::pwritev2(fd, pieces, count, -1, RWF_NOSIGNAL);
    // An older kernel refuses the flag (EOPNOTSUPP); a filter may refuse
    // pwritev2 itself. From then on the mask, which also reports any error
    // that was not about the flag.
    if (written >= 0 || (errno != EOPNOTSUPP && errno != EINVAL && errno != ENOSYS && errno != EPERM)) return written;
    g_pipe_write_guard.store(detail::PipeWriteGuard::signal_mask, std::memory_order_relaxed);
  }
  return write_pipe_masking_sigpipe(fd, pieces, count);
}

result<ByteStream::Kind> stream_kind(int fd, std::string_view name) {
  struct stat status {};
  if (::fstat(fd, &status) != 0) return error::from_errno(errno, name, "fstat");
  if (S_ISFIFO(status.st_mode)) return ByteStream::Kind::pipe;
  if (S_ISSOCK(status.st_mode)) {
    int type = 0;
    socklen_t size = sizeof type;
    if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size) != 0)
      return error::from_errno(errno, name, "getsockopt SO_TYPE");
    if (type == SOCK_STREAM) return ByteStream::Kind::socket;
  }
  return error(errc::invalid_argument, name, "not a pipe, FIFO or stream socket");
}

result<void> set_nonblocking(int fd, std::string_view name) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return error::from_errno(errno, name, "fcntl F_GETFL");
  if ((flags & O_NONBLOCK) == 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
    return error::from_errno(errno, name, "fcntl F_SETFL O_NONBLOCK");
  return {};
}

std::string moved_detail(const char* verb, std::size_t done, std::size_t wanted) {
  return std::string(verb) + " " + std::to_string(done) + " of " + std::to_string(wanted) + " bytes";
}

}  // namespace

detail::PipeWriteGuard detail::pipe_write_guard() noexcept { return g_pipe_write_guard.load(std::memory_order_relaxed); }
void detail::set_pipe_write_guard(PipeWriteGuard guard) noexcept {
  g_pipe_write_guard.store(guard, std::memory_order_relaxed);
}

namespace {
const std::shared_ptr<const std::string>& unnamed() {
  static const auto name = std::make_shared<const std::string>("byte stream");
  return name;
}
}  // namespace

const std::string& ByteStream::name() const noexcept { return *shared_name(); }

const std::shared_ptr<const std::string>& ByteStream::shared_name() const noexcept {
  return name_ ? name_ : unnamed();
}

result<ByteStream> ByteStream::wrap(Fd fd, std::string_view name) {
  if (!fd.valid()) return error(errc::invalid_argument, name, "no descriptor");
  auto kind = stream_kind(fd.get(), name);
  if (!kind) return std::move(kind).error();
  if (auto made = set_nonblocking(fd.get(), name); !made) return std::move(made).error();
  return ByteStream(std::move(fd), *kind, std::make_shared<const std::string>(name));
}

result<ByteStream> ByteStream::adopt(int fd, std::string_view name) {
  const int flags = ::fcntl(fd, F_GETFD);
  if (flags < 0) return error::from_errno(errno, name, "inherited fd " + std::to_string(fd) + " is not open");
  // Checked before taking ownership: a descriptor that is no stream stays open.
  if (auto kind = stream_kind(fd, name); !kind) return std::move(kind).error();
  // Ours now: it must not leak into the next exec.
  if (::fcntl(fd, F_SETFD, flags | FD_CLOEXEC) != 0) return error::from_errno(errno, name, "fcntl F_SETFD");
  return wrap(Fd(fd), name);
}

result<std::size_t> ByteStream::read_some(std::span<std::byte> buffer, WaitLimit limit) {
  iovec piece{buffer.data(), buffer.size()};
  return read_vector(&piece, 1, limit);
}

result<std::size_t> ByteStream::read_vector(const iovec* pieces, int count, WaitLimit limit) {
  std::size_t wanted = 0;
  for (int i = 0; i < count; ++i) wanted += pieces[i].iov_len;
  if (wanted == 0) return std::size_t{0};
  for (;;) {
    const ssize_t got = ::readv(fd_.get(), pieces, count);
    if (got > 0) return static_cast<std::size_t>(got);
    if (got == 0) {
      if (kind_ == Kind::socket) return std::size_t{0};
      const EmptyRead seen = after_empty_read(fd_.get());
      if (seen == EmptyRead::end_of_stream) return std::size_t{0};
      if (seen == EmptyRead::data_came) continue;
      // A FIFO nobody has opened for writing yet: wait as if empty.
    } else if (errno == EINTR) {
      continue;
    } else if (errno != EAGAIN) {
      return error(errc_from_errno(errno), shared_name(), "read", errno);
    }
    if (auto ready = detail::wait_ready(fd_.get(), POLLIN, limit, name(), "nothing to read"); !ready)
      return std::move(ready).error();
  }
}

result<void> ByteStream::read_exact(std::span<std::byte> buffer, WaitLimit limit) {
  std::size_t done = 0;
  while (done < buffer.size()) {
    auto got = read_some(buffer.subspan(done), limit);
    if (!got) {
      error failure = std::move(got).error();
      if (done > 0) failure.add_context(moved_detail("read", done, buffer.size()));
      return failure;
    }
    if (*got == 0) return error(errc::peer_gone, shared_name(), "end of stream after " + moved_detail("reading", done, buffer.size()));
    done += *got;
  }
  return {};
}

result<std::size_t> ByteStream::write_vector(const iovec* pieces, int count, WaitLimit limit) {
  for (;;) {
    ssize_t written;
    if (kind_ == Kind::socket) {
      msghdr message{};
      message.msg_iov = const_cast<iovec*>(pieces);
      message.msg_iovlen = static_cast<std::size_t>(count);
      written = ::sendmsg(fd_.get(), &message, MSG_NOSIGNAL | detail::dont_wait_unless_forever(limit));
    } else {
      written = write_pipe_without_sigpipe(fd_.get(), pieces, count);
    }
    if (written >= 0) {
      if (written > 0 || count == 0) return static_cast<std::size_t>(written);
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EPIPE || errno == ECONNRESET) {
      return error(errc::peer_gone, shared_name(), "no reader: the other end is closed", errno);
    } else if (errno != EAGAIN) {
      return error(errc_from_errno(errno), shared_name(), "write", errno);
    }
    if (auto ready = detail::wait_ready(fd_.get(), POLLOUT, limit, name(), "no room to write"); !ready)
      return std::move(ready).error();
  }
}

result<std::size_t> ByteStream::write_some(std::span<const std::byte> bytes, WaitLimit limit) {
  iovec piece{const_cast<std::byte*>(bytes.data()), bytes.size()};
  return write_vector(&piece, bytes.empty() ? 0 : 1, limit);
}

result<void> ByteStream::write_all(std::span<const std::byte> bytes, WaitLimit limit) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    auto written = write_some(bytes.subspan(done), limit);
    if (!written) {
      error failure = std::move(written).error();
      if (done > 0) failure.add_context(moved_detail("wrote", done, bytes.size()));
      return failure;
    }
    done += *written;
  }
  return {};
}

}  // namespace ferry
