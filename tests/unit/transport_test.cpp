// Transports in one process: every stream kind (pipe, FIFO, UNIX and TCP
// stream sockets) through one test body for order, EOF, frame boundaries from
// 0 B to 16 MiB, try_/timed behaviour and hostile frames; FIFO and socket
// specifics; datagrams; and the iterative and concurrent servers under
// malformed, oversized, slow and flooding clients.
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/ferry.hpp"
#include "ferry_test.hpp"
#include "stream_pairs.hpp"

namespace {

using namespace std::chrono_literals;
using ferry::ByteStream;
using ferry::errc;
using ferry::Frame;
using ferry::FramedStream;
using ferry::test::bytes_of;
using ferry::test::StreamKind;
using ferry::test::text_of;
using ferry::test::StreamPair;

constexpr std::size_t kMiB = 1024 * 1024;

// Byte i of a test message of `size` bytes: depends on both, so a frame cut,
// shifted or mixed with another shows.
std::byte pattern(std::size_t size, std::size_t i) { return static_cast<std::byte>((i * 31 + size * 7 + i / 251) & 0xFF); }

Frame patterned(std::size_t size) {
  Frame frame(size);
  for (std::size_t i = 0; i < size; ++i) frame[i] = pattern(size, i);
  return frame;
}

bool matches_pattern(const Frame& frame) {
  for (std::size_t i = 0; i < frame.size(); ++i)
    if (frame[i] != pattern(frame.size(), i)) return false;
  return true;
}


bool sigpipe_is_default() {
  struct sigaction current {};
  ::sigaction(SIGPIPE, nullptr, &current);
  return current.sa_handler == SIG_DFL;
}

bool sigpipe_blocked_or_pending() {
  sigset_t mask, pending;
  pthread_sigmask(SIG_BLOCK, nullptr, &mask);
  sigpending(&pending);
  return sigismember(&mask, SIGPIPE) == 1 || sigismember(&pending, SIGPIPE) == 1;
}

// Writes until the stream takes no more, not even one byte, and still takes
// nothing a moment later (TCP moves bytes from the send to the receive
// buffer and grows its buffers as acknowledgements come in; a stream that
// refuses 64 KiB may still take a few bytes into a half-full buffer); false
// if it never filled up.
// TCP keeps freeing send space for a while after it first refuses some
// (acknowledgements, the receiver's window growing): full is when three
// passes 5 ms apart took nothing.
bool fill(ByteStream& writer) {
  const std::vector<std::byte> chunk(64 * 1024, std::byte{0x55});
  int quiet = 0;
  for (int pass = 0; pass < 1000; ++pass) {
    bool took_some = false;
    for (std::size_t size = chunk.size(); size > 0; size /= 16) {
      for (int i = 0; i < 100'000; ++i) {
        auto written = writer.try_write_some(std::span(chunk).first(size));
        if (!written) {
          if (written.error().code() != errc::would_block) return false;
          break;
        }
        took_some = true;
      }
    }
    quiet = took_some ? 0 : quiet + 1;
    if (quiet == 3) return true;
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

// Reads everything `reader` holds now.
void drain(ByteStream& reader) {
  std::vector<std::byte> sink(64 * 1024);
  while (true) {
    auto got = reader.try_read_some(sink);
    if (!got || *got == 0) return;
  }
}

// ---- every stream kind -------------------------------------------------------

class EveryStream : public ::testing::TestWithParam<StreamKind> {
 protected:
  void SetUp() override {
    pair_ = ferry::test::make_stream_pair(GetParam());
    if (!pair_.unavailable.empty()) GTEST_SKIP() << pair_.unavailable;
    ASSERT_TRUE(pair_.writer.valid() && pair_.reader.valid());
  }
  StreamPair pair_;
};

TEST_P(EveryStream, BytesArriveInOrderAndEndOfStreamFollowsTheLastWriter) {
  const std::size_t count = ferry::test::scaled(200'000);
  std::thread writer([&] {
    std::vector<std::uint32_t> numbers;
    std::uint32_t next = 0;
    std::size_t chunk = 1;
    while (next < count) {
      numbers.clear();
      for (std::size_t i = 0; i < chunk && next < count; ++i) numbers.push_back(next++);
      ASSERT_TRUE(pair_.writer.write_all(std::as_bytes(std::span(numbers))));
      chunk = chunk * 3 % 1021 + 1;  // odd sizes, so reads and writes never line up
    }
    pair_.writer.close();
  });
  std::vector<std::byte> buffer(4096 + 3);
  std::vector<std::byte> carry;
  std::uint32_t expected = 0;
  for (;;) {
    auto got = pair_.reader.read_some(buffer);
    ASSERT_TRUE(got) << got.error().message();
    if (*got == 0) break;
    carry.insert(carry.end(), buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(*got));
    std::size_t whole = carry.size() / 4 * 4;
    for (std::size_t at = 0; at < whole; at += 4) {
      std::uint32_t value;
      std::memcpy(&value, carry.data() + at, 4);
      ASSERT_EQ(value, expected++);
    }
    carry.erase(carry.begin(), carry.begin() + static_cast<std::ptrdiff_t>(whole));
  }
  writer.join();
  EXPECT_EQ(expected, count);
  EXPECT_TRUE(carry.empty());
  // End of stream stays end of stream.
  auto again = pair_.reader.try_read_some(buffer);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, 0u);
  std::array<std::byte, 4> four{};
  auto exact = pair_.reader.read_exact(four);
  ASSERT_FALSE(exact);
  EXPECT_EQ(exact.error().code(), errc::peer_gone);
}

TEST_P(EveryStream, FramesKeepTheirBoundariesFromEmptyTo16MiB) {
  const std::vector<std::size_t> sizes = {0,    1,    2,     7,     8,     9,          255,    4095,      4096,
                                          4097, 65535, 65536, 65537, 100'000, kMiB + 3, 16 * kMiB, 1, 0};
  const ferry::FrameOptions options{.max_frame = 16 * kMiB};
  const std::size_t rounds = ferry::test::scaled(2);
  FramedStream sender(std::move(pair_.writer), options);
  FramedStream receiver(std::move(pair_.reader), options);
  std::thread writer([&] {
    for (std::size_t round = 0; round < rounds; ++round)
      for (std::size_t size : sizes) ASSERT_TRUE(sender.send_frame(patterned(size)));
  });
  for (std::size_t round = 0; round < rounds; ++round) {
    for (std::size_t size : sizes) {
      auto frame = receiver.receive_frame_for(60s);
      ASSERT_TRUE(frame) << frame.error().message();
      ASSERT_EQ(frame->size(), size);
      ASSERT_TRUE(matches_pattern(*frame)) << "frame of " << size << " bytes";
    }
  }
  writer.join();
  auto nothing = receiver.try_receive_frame();
  ASSERT_FALSE(nothing);
  EXPECT_EQ(nothing.error().code(), errc::would_block);
}

TEST_P(EveryStream, TryAndTimedCallsReportWouldBlockAndTimedOut) {
  std::array<std::byte, 16> buffer{};
  auto tried = pair_.reader.try_read_some(buffer);
  ASSERT_FALSE(tried);
  EXPECT_EQ(tried.error().code(), errc::would_block);
  auto timed = pair_.reader.read_some_for(buffer, 20ms);
  ASSERT_FALSE(timed);
  EXPECT_EQ(timed.error().code(), errc::timed_out);
  auto exact = pair_.reader.read_exact_until(buffer, ferry::deadline_after(10ms));
  ASSERT_FALSE(exact);
  EXPECT_EQ(exact.error().code(), errc::timed_out);

  FramedStream receiver(std::move(pair_.reader));
  auto no_frame = receiver.try_receive_frame();
  ASSERT_FALSE(no_frame);
  EXPECT_EQ(no_frame.error().code(), errc::would_block);
  auto late_frame = receiver.receive_frame_for(20ms);
  ASSERT_FALSE(late_frame);
  EXPECT_EQ(late_frame.error().code(), errc::timed_out);

  // TCP can free send space after fill() found none (acknowledgements, the
  // receiver's window growing): a write that then goes is right, not the
  // case under test. So each call is tried on a full stream until it finds
  // no room; after one that went, the reader is emptied and what a frame
  // left pending goes out before the stream is filled again.
  ByteStream& reader = receiver.stream();
  const auto when_full = [&](ByteStream& writer, auto call, auto after_it_went) -> std::optional<ferry::error> {
    for (int attempt = 0; attempt < 20; ++attempt) {
      if (!fill(writer)) {
        ADD_FAILURE() << "the stream never filled up";
        return std::nullopt;
      }
      auto outcome = call();
      if (!outcome) return outcome.error();
      drain(reader);
      after_it_went();
    }
    ADD_FAILURE() << "a full stream took the write 20 times";
    return std::nullopt;
  };
  const auto nothing = [] {};
  auto full = when_full(pair_.writer, [&] { return pair_.writer.try_write_some(bytes_of("x")); }, nothing);
  ASSERT_TRUE(full);
  EXPECT_EQ(full->code(), errc::would_block);
  auto slow = when_full(pair_.writer, [&] { return pair_.writer.write_all_for(bytes_of("x"), 20ms); }, nothing);
  ASSERT_TRUE(slow);
  EXPECT_EQ(slow->code(), errc::timed_out);

  FramedStream sender(std::move(pair_.writer));
  const auto flush_rest = [&] { EXPECT_TRUE(sender.flush_for(10s)); };
  auto frame_full = when_full(sender.stream(), [&] { return sender.try_send_frame(bytes_of("frame")); }, flush_rest);
  ASSERT_TRUE(frame_full);
  EXPECT_EQ(frame_full->code(), errc::would_block);
  EXPECT_EQ(sender.pending_bytes(), 0u) << "nothing of a frame that could not start is kept";
  auto frame_late =
      when_full(sender.stream(), [&] { return sender.send_frame_for(bytes_of("frame"), 20ms); }, flush_rest);
  ASSERT_TRUE(frame_late);
  EXPECT_EQ(frame_late->code(), errc::timed_out);
}

// After a large frame the receiver reads the next header together with as
// much payload as the large frame had; small frames that come in that read
// are split off whole, and none keeps the large buffer.
TEST_P(EveryStream, SmallFramesReadTogetherAfterALargeOneComeOutWholeAndSmall) {
  const ferry::FrameOptions options{.max_frame = 4 * kMiB};
  FramedStream sender(std::move(pair_.writer), options);
  FramedStream receiver(std::move(pair_.reader), options);
  std::vector<std::size_t> sizes = {300'000};
  for (std::size_t i = 0; i < ferry::test::scaled(400); ++i) sizes.push_back(i % 97);
  sizes.push_back(70'000);
  sizes.push_back(3);
  std::vector<std::byte> burst;  // every frame after the first, written at once
  for (std::size_t i = 1; i < sizes.size(); ++i) {
    const auto header = ferry::frame_header(static_cast<std::uint32_t>(sizes[i]));
    const Frame payload = patterned(sizes[i]);
    burst.insert(burst.end(), header.begin(), header.end());
    burst.insert(burst.end(), payload.begin(), payload.end());
  }
  std::thread writer([&] {
    ASSERT_TRUE(sender.send_frame(patterned(sizes[0])));
    ASSERT_TRUE(sender.stream().write_all(burst));
  });
  for (const std::size_t size : sizes) {
    auto frame = receiver.receive_frame_for(60s);
    ASSERT_TRUE(frame) << frame.error().message();
    ASSERT_EQ(frame->size(), size);
    ASSERT_TRUE(matches_pattern(*frame)) << "frame of " << size << " bytes";
    EXPECT_LE(frame->capacity(), 2 * size + 16 * 1024) << "a small frame kept a large buffer";
  }
  writer.join();
}

TEST_P(EveryStream, AFrameSentInPartsArrivesAsOne) {
  FramedStream sender(std::move(pair_.writer));
  FramedStream receiver(std::move(pair_.reader));
  const Frame whole = patterned(5000);
  const std::span<const std::byte> parts[] = {std::span(whole).first(3), std::span(whole).subspan(3, 0),
                                              std::span(whole).subspan(3)};
  std::thread writer([&] { ASSERT_TRUE(sender.send_frame(parts, ferry::detail::WaitLimit::forever())); });
  auto frame = receiver.receive_frame_for(60s);
  writer.join();
  ASSERT_TRUE(frame) << frame.error().message();
  EXPECT_EQ(*frame, whole);
  const std::span<const std::byte> too_many[] = {parts[0], parts[1], parts[2], parts[0]};
  auto refused = sender.send_frame(too_many, ferry::detail::WaitLimit::forever());
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), errc::invalid_argument);
}

TEST_P(EveryStream, APartialFrameWaitsForItsRestAcrossTryReceives) {
  FramedStream receiver(std::move(pair_.reader));
  const Frame payload = patterned(1000);
  const auto header = ferry::frame_header(1000);
  ASSERT_TRUE(pair_.writer.write_all(std::span(header).first(5)));
  auto first = receiver.receive_frame_for(20ms);
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error().code(), errc::timed_out);
  EXPECT_TRUE(receiver.mid_frame());
  ASSERT_TRUE(pair_.writer.write_all(std::span(header).subspan(5)));
  ASSERT_TRUE(pair_.writer.write_all(std::span(payload).first(400)));
  auto second = receiver.try_receive_frame();
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code(), errc::would_block);
  ASSERT_TRUE(pair_.writer.write_all(std::span(payload).subspan(400)));
  auto whole = receiver.receive_frame_for(10s);
  ASSERT_TRUE(whole) << whole.error().message();
  EXPECT_EQ(*whole, payload);
  EXPECT_FALSE(receiver.mid_frame());
}

// Read syscalls of this thread since it was made (syscr of
// /proc/thread-self/io, which counts reads that found nothing too).
class ReadCount {
 public:
  ReadCount() : start_(syscr()) {}
  // Not counting the look that started the count.
  [[nodiscard]] std::uint64_t reads() const { return syscr() - start_ - 1; }

 private:
  // The count before this look's own read.
  static std::uint64_t syscr() {
    const int fd = ::open("/proc/thread-self/io", O_RDONLY | O_CLOEXEC);
    char text[512] = {};
    const ssize_t got = fd < 0 ? -1 : ::read(fd, text, sizeof text - 1);
    if (fd >= 0) ::close(fd);
    const char* field = got > 0 ? std::strstr(text, "syscr: ") : nullptr;
    EXPECT_NE(field, nullptr) << "no syscr in /proc/thread-self/io";
    return field ? std::strtoull(field + 7, nullptr, 10) : 0;
  }
  std::uint64_t start_;
};

// Waits until `bytes` bytes wait in the stream to be read (FIONREAD).
void wait_until_readable(const ByteStream& stream, int bytes) {
  const ferry::deadline give_up = ferry::deadline_after(10s);
  int waiting = 0;
  while (::ioctl(stream.fd().get(), FIONREAD, &waiting) == 0 && waiting < bytes && ferry::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_EQ(waiting, bytes);
}

// receive_ready_frame is for a loop that was told the stream is readable:
// after a read that came back short it stops (would_block) instead of
// making the read that would find nothing; what arrived is kept.
TEST_P(EveryStream, AReadyFrameIsTakenWithOneReadAndAShortReadEndsTheCall) {
  FramedStream receiver(std::move(pair_.reader));
  const Frame payload = patterned(1000);
  const auto header = ferry::frame_header(1000);
  ASSERT_TRUE(pair_.writer.write_all(header));
  ASSERT_TRUE(pair_.writer.write_all(std::span(payload).first(400)));
  ASSERT_NO_FATAL_FAILURE(wait_until_readable(receiver.stream(), 408));
  const ReadCount partial_read;
  auto part = receiver.receive_ready_frame();
  EXPECT_EQ(partial_read.reads(), 1u);
  ASSERT_FALSE(part);
  EXPECT_EQ(part.error().code(), errc::would_block);
  EXPECT_TRUE(receiver.mid_frame());

  ASSERT_TRUE(pair_.writer.write_all(std::span(payload).subspan(400)));
  ASSERT_NO_FATAL_FAILURE(wait_until_readable(receiver.stream(), 600));
  const ReadCount rest_read;
  auto whole = receiver.receive_ready_frame();
  EXPECT_EQ(rest_read.reads(), 1u);
  ASSERT_TRUE(whole) << whole.error().message();
  EXPECT_EQ(*whole, payload);
  EXPECT_FALSE(receiver.mid_frame());

  // Two frames in one read: the second is handed out without a read.
  FramedStream sender(std::move(pair_.writer));
  ASSERT_TRUE(sender.send_frame(bytes_of("one")));
  ASSERT_TRUE(sender.send_frame(bytes_of("two")));
  ASSERT_NO_FATAL_FAILURE(wait_until_readable(receiver.stream(), 2 * (8 + 3)));
  const ReadCount both_read;
  auto one = receiver.receive_ready_frame();
  auto two = receiver.receive_ready_frame();
  EXPECT_EQ(both_read.reads(), 1u);
  ASSERT_TRUE(one && two);
  EXPECT_EQ(text_of(*one), "one");
  EXPECT_EQ(text_of(*two), "two");
}

TEST_P(EveryStream, EndOfStreamInsideAFrameIsPeerGoneAndDeliversNothing) {
  FramedStream receiver(std::move(pair_.reader));
  {
    FramedStream sender(std::move(pair_.writer));
    ASSERT_TRUE(sender.send_frame(bytes_of("whole")));
    const auto header = ferry::frame_header(100);
    ASSERT_TRUE(sender.stream().write_all(header));
    ASSERT_TRUE(sender.stream().write_all(bytes_of("only part")));
  }
  auto whole = receiver.receive_frame_for(10s);
  ASSERT_TRUE(whole) << whole.error().message();
  EXPECT_EQ(text_of(*whole), "whole");
  auto cut = receiver.receive_frame_for(10s);
  ASSERT_FALSE(cut);
  EXPECT_EQ(cut.error().code(), errc::peer_gone);
  EXPECT_NE(cut.error().detail().find("inside a frame"), std::string::npos) << cut.error().message();
}

TEST_P(EveryStream, ACleanCloseBetweenFramesIsPeerGone) {
  FramedStream receiver(std::move(pair_.reader));
  pair_.writer.close();
  auto frame = receiver.receive_frame_for(10s);
  ASSERT_FALSE(frame);
  EXPECT_EQ(frame.error().code(), errc::peer_gone);
  EXPECT_EQ(frame.error().detail(), "end of stream");
}

// Sets SIGPIPE to its default disposition for one test (an ignored SIGPIPE
// is inherited across exec, so the runner's parent could have set it).
class DefaultSigpipe {
 public:
  DefaultSigpipe() {
    struct sigaction fallback {};
    fallback.sa_handler = SIG_DFL;
    ::sigaction(SIGPIPE, &fallback, &saved_);
  }
  ~DefaultSigpipe() { ::sigaction(SIGPIPE, &saved_, nullptr); }

 private:
  struct sigaction saved_ {};
};

// Pipes are written with RWF_NOSIGNAL where the kernel has it and with the
// signal mask where it does not: a test picks one, then puts the flag back.
class PipeGuardFor {
 public:
  explicit PipeGuardFor(ferry::detail::PipeWriteGuard guard) { ferry::detail::set_pipe_write_guard(guard); }
  ~PipeGuardFor() { ferry::detail::set_pipe_write_guard(ferry::detail::PipeWriteGuard::write_flag); }
  PipeGuardFor(const PipeGuardFor&) = delete;
  PipeGuardFor& operator=(const PipeGuardFor&) = delete;
};

constexpr ferry::detail::PipeWriteGuard kPipeGuards[] = {ferry::detail::PipeWriteGuard::write_flag,
                                                         ferry::detail::PipeWriteGuard::signal_mask};

TEST_P(EveryStream, WritingWithoutAReaderIsPeerGoneAndNoSigpipeDeath) {
  DefaultSigpipe sigpipe;
  ASSERT_TRUE(sigpipe_is_default()) << "the test must run with SIGPIPE at its default disposition";
  for (const auto guard : kPipeGuards) {
    SCOPED_TRACE(guard == ferry::detail::PipeWriteGuard::write_flag ? "RWF_NOSIGNAL" : "signal mask");
    const PipeGuardFor pipes(guard);
    StreamPair pair = ferry::test::make_stream_pair(GetParam());
    pair.reader.close();
    // TCP may take the first bytes before the peer's reset comes back.
    ferry::result<void> written;
    for (int attempt = 0; attempt < 1000 && written; ++attempt) {
      written = pair.writer.write_all_for(bytes_of("into the void"), 10s);
      if (written) std::this_thread::sleep_for(1ms);
    }
    ASSERT_FALSE(written);
    EXPECT_EQ(written.error().code(), errc::peer_gone) << written.error().message();
    EXPECT_TRUE(sigpipe_is_default());
    EXPECT_FALSE(sigpipe_blocked_or_pending()) << "the mask is restored and the signal consumed";
    FramedStream sender(std::move(pair.writer));
    auto frame = sender.send_frame(bytes_of("frame"));
    ASSERT_FALSE(frame);
    EXPECT_EQ(frame.error().code(), errc::peer_gone);
  }
}

// Whether this kernel takes pwritev2's RWF_NOSIGNAL (Linux 6.18+), asked
// of a pipe directly.
bool kernel_has_rwf_nosignal() {
  int ends[2];
  if (::pipe2(ends, O_CLOEXEC) != 0) return false;
  char byte = 'x';
  iovec piece{&byte, 1};
  const bool taken = ::pwritev2(ends[1], &piece, 1, -1, 0x100) == 1;
  ::close(ends[0]);
  ::close(ends[1]);
  return taken;
}

TEST(PipeWrites, UseTheNoSignalFlagWhereTheKernelHasItAndTheSignalMaskWhereNot) {
  DefaultSigpipe sigpipe;
  const PipeGuardFor pipes(ferry::detail::PipeWriteGuard::write_flag);
  StreamPair pair = ferry::test::make_stream_pair(StreamKind::pipe);
  ASSERT_TRUE(pair.writer.write_all(bytes_of("read")));
  const auto expected = kernel_has_rwf_nosignal() ? ferry::detail::PipeWriteGuard::write_flag
                                                  : ferry::detail::PipeWriteGuard::signal_mask;
  EXPECT_EQ(ferry::detail::pipe_write_guard(), expected);
  pair.reader.close();
  auto written = pair.writer.write_all(bytes_of("unread"));
  ASSERT_FALSE(written);
  EXPECT_EQ(written.error().code(), errc::peer_gone);
  EXPECT_EQ(ferry::detail::pipe_write_guard(), expected);
  EXPECT_FALSE(sigpipe_blocked_or_pending());
}

TEST_P(EveryStream, ATrySendThatStartedKeepsTheRestUntilFlushed) {
  const ferry::FrameOptions options{.max_frame = 16 * kMiB};
  FramedStream sender(std::move(pair_.writer), options);
  FramedStream receiver(std::move(pair_.reader), options);
  const Frame big = patterned(16 * kMiB);
  ASSERT_TRUE(sender.try_send_frame(big)) << "an empty stream takes the first bytes";
  // No stream here buffers 16 MiB, but if one did there is simply nothing kept.
  std::thread reader_thread([&] {
    auto frame = receiver.receive_frame_for(60s);
    ASSERT_TRUE(frame) << frame.error().message();
    EXPECT_EQ(frame->size(), big.size());
    EXPECT_TRUE(matches_pattern(*frame));
    auto next = receiver.receive_frame_for(60s);
    ASSERT_TRUE(next) << next.error().message();
    EXPECT_EQ(text_of(*next), "after");
  });
  ASSERT_TRUE(sender.send_frame(bytes_of("after")));  // the kept rest goes first
  EXPECT_EQ(sender.pending_bytes(), 0u);
  reader_thread.join();
}

TEST_P(EveryStream, MalformedAndOversizedHeadersAreTypedErrorsThatStick) {
  FramedStream receiver(std::move(pair_.reader), {.max_frame = 1000});
  ASSERT_TRUE(pair_.writer.write_all(bytes_of("GET / HTTP/1.1\r\n\r\n")));
  auto bad = receiver.receive_frame_for(10s);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), errc::corrupt);
  EXPECT_TRUE(receiver.broken());
  auto still = receiver.try_receive_frame();
  ASSERT_FALSE(still);
  EXPECT_EQ(still.error().code(), errc::corrupt);

  auto fresh = ferry::test::make_stream_pair(GetParam());
  FramedStream small(std::move(fresh.reader), {.max_frame = 1000});
  ASSERT_TRUE(fresh.writer.write_all(ferry::frame_header(0xFFFF'FFFF)));
  auto huge = small.receive_frame_for(10s);
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code(), errc::limit_reached);
  EXPECT_NE(huge.error().detail().find("4294967295"), std::string::npos) << huge.error().message();
  EXPECT_NE(huge.error().detail().find("1000"), std::string::npos) << huge.error().message();

  FramedStream sender(std::move(fresh.writer), {.max_frame = 10});
  auto too_big = sender.send_frame(patterned(11));
  ASSERT_FALSE(too_big);
  EXPECT_EQ(too_big.error().code(), errc::invalid_argument);
  EXPECT_NE(too_big.error().detail().find("11"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Transport, EveryStream, ferry::test::all_stream_kinds(), ferry::test::stream_kind_name);

// ---- pipes and FIFOs -----------------------------------------------------------

TEST(Pipe, EndsAreCloseOnExecAndAnInheritableCopyIsNot) {
  auto pipe = ferry::Pipe::create();
  ASSERT_TRUE(pipe);
  EXPECT_TRUE(::fcntl(pipe->reader.fd().get(), F_GETFD) & FD_CLOEXEC);
  EXPECT_TRUE(::fcntl(pipe->writer.fd().get(), F_GETFD) & FD_CLOEXEC);
  auto inherited = pipe->writer.inheritable(20);
  ASSERT_TRUE(inherited);
  EXPECT_GE(inherited->get(), 20);
  EXPECT_FALSE(::fcntl(inherited->get(), F_GETFD) & FD_CLOEXEC);
  auto wrong_way = ferry::Pipe::adopt_reader(inherited->get());
  ASSERT_FALSE(wrong_way);
  EXPECT_EQ(wrong_way.error().code(), errc::invalid_argument);
  const int number = inherited->release();
  auto adopted = ferry::Pipe::adopt_writer(number);
  ASSERT_TRUE(adopted) << adopted.error().message();
  EXPECT_TRUE(::fcntl(number, F_GETFD) & FD_CLOEXEC) << "adopted: not passed on to further execs";
  ASSERT_TRUE(adopted->write_all(bytes_of("via adopted")));
  std::array<std::byte, 11> got{};
  ASSERT_TRUE(pipe->reader.read_exact_for(got, 10s));
  EXPECT_EQ(std::memcmp(got.data(), "via adopted", 11), 0);
  auto closed = ferry::Pipe::adopt_reader(1000);
  ASSERT_FALSE(closed);
  const int file = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  auto not_a_stream = ByteStream::adopt(file, "/dev/null");
  ASSERT_FALSE(not_a_stream);
  EXPECT_EQ(not_a_stream.error().code(), errc::invalid_argument);
  EXPECT_NE(::fcntl(file, F_GETFD), -1) << "a refused descriptor is left open";
  ::close(file);
}

TEST(Fifo, IsCreatedWithExactlyTheModeAndOnlyOnce) {
  ferry::test::TempDir directory;
  const std::string path = directory.file("feed");
  const mode_t old_umask = ::umask(077);
  auto made = ferry::Fifo::create(path, 0640);
  ::umask(old_umask);
  ASSERT_TRUE(made) << made.error().message();
  struct stat status {};
  ASSERT_EQ(::stat(path.c_str(), &status), 0);
  EXPECT_TRUE(S_ISFIFO(status.st_mode));
  EXPECT_EQ(status.st_mode & 07777, 0640u);
  auto again = ferry::Fifo::create(path);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), errc::already_exists);
  ASSERT_TRUE(ferry::Fifo::remove(path));
  EXPECT_NE(::access(path.c_str(), F_OK), 0);
  auto gone = ferry::Fifo::remove(path);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code(), errc::not_found);
  const std::string plain = directory.file("plain");
  ::close(::open(plain.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
  auto not_fifo = ferry::Fifo::remove(plain);
  ASSERT_FALSE(not_fifo);
  EXPECT_EQ(not_fifo.error().code(), errc::invalid_argument);
  EXPECT_EQ(::access(plain.c_str(), F_OK), 0) << "a file that is not a FIFO is not removed";
}

TEST(Fifo, AWriterWithoutReaderWouldBlockOrTimesOut) {
  ferry::test::TempDir directory;
  const std::string path = directory.file("feed");
  ASSERT_TRUE(ferry::Fifo::create(path));
  auto tried = ferry::Fifo::try_open_writer(path);
  ASSERT_FALSE(tried);
  EXPECT_EQ(tried.error().code(), errc::would_block);
  EXPECT_EQ(tried.error().sys_errno(), ENXIO);
  auto timed = ferry::Fifo::open_writer_for(path, 30ms);
  ASSERT_FALSE(timed);
  EXPECT_EQ(timed.error().code(), errc::timed_out);
  auto missing = ferry::Fifo::try_open_reader(directory.file("missing"));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), errc::not_found);
}

TEST(Fifo, AReaderOpenedFirstWaitsForAWriterInsteadOfSeeingEndOfStream) {
  ferry::test::TempDir directory;
  const std::string path = directory.file("feed");
  ASSERT_TRUE(ferry::Fifo::create(path));
  auto reader = ferry::Fifo::try_open_reader(path);
  ASSERT_TRUE(reader) << reader.error().message();
  std::array<std::byte, 8> buffer{};
  auto early = reader->try_read_some(buffer);
  ASSERT_FALSE(early) << "no writer yet is not end of stream";
  EXPECT_EQ(early.error().code(), errc::would_block);
  auto timed = reader->read_some_for(buffer, 20ms);
  ASSERT_FALSE(timed);
  EXPECT_EQ(timed.error().code(), errc::timed_out);
  std::thread writer([&] {
    auto opened = ferry::Fifo::open_writer_for(path, 10s);
    ASSERT_TRUE(opened) << opened.error().message();
    ASSERT_TRUE(opened->write_all(bytes_of("late")));
  });
  ASSERT_TRUE(reader->read_exact_for(std::span(buffer).first(4), 10s));
  EXPECT_EQ(std::memcmp(buffer.data(), "late", 4), 0);
  writer.join();
  auto end = reader->read_some_for(buffer, 10s);
  ASSERT_TRUE(end);
  EXPECT_EQ(*end, 0u) << "the writer came and went: end of stream";
}

TEST(Fifo, BlockingOpensMeet) {
  ferry::test::TempDir directory;
  const std::string path = directory.file("feed");
  ASSERT_TRUE(ferry::Fifo::create(path));
  std::thread writer([&] {
    auto opened = ferry::Fifo::open_writer(path);
    ASSERT_TRUE(opened) << opened.error().message();
    FramedStream framed(std::move(*opened));
    ASSERT_TRUE(framed.send_frame(bytes_of("met")));
  });
  auto reader = ferry::Fifo::open_reader(path);
  ASSERT_TRUE(reader) << reader.error().message();
  FramedStream framed(std::move(*reader));
  auto frame = framed.receive_frame_for(10s);
  writer.join();
  ASSERT_TRUE(frame) << frame.error().message();
  EXPECT_EQ(text_of(*frame), "met");
}

// ---- stream sockets --------------------------------------------------------------

TEST(UnixSocket, ListenerFileHasTheModeIsExclusiveAndIsRemoved) {
  ferry::test::TempDir directory;
  const std::string path = directory.file("app.sock");
  {
    auto listener = ferry::UnixSocket::listen(path);
    ASSERT_TRUE(listener) << listener.error().message();
    struct stat status {};
    ASSERT_EQ(::stat(path.c_str(), &status), 0);
    EXPECT_TRUE(S_ISSOCK(status.st_mode));
    EXPECT_EQ(status.st_mode & 0777, 0600u);
    auto second = ferry::UnixSocket::listen(path);
    ASSERT_FALSE(second);
    EXPECT_EQ(second.error().code(), errc::already_exists);
    auto none = listener->try_accept();
    ASSERT_FALSE(none);
    EXPECT_EQ(none.error().code(), errc::would_block);
    auto late = listener->accept_for(20ms);
    ASSERT_FALSE(late);
    EXPECT_EQ(late.error().code(), errc::timed_out);
  }
  EXPECT_NE(::access(path.c_str(), F_OK), 0) << "the listener removes its socket file";
  auto nobody = ferry::UnixSocket::connect_for(path, 1s);
  ASSERT_FALSE(nobody);
  EXPECT_EQ(nobody.error().code(), errc::not_found);
}

TEST(UnixSocket, PeerIdentityIsThisProcessAndAbstractNamesWork) {
  const std::string name = "@" + ferry::test::unique_name("abstract");
  auto listener = ferry::UnixSocket::listen(name);
  ASSERT_TRUE(listener) << listener.error().message();
  EXPECT_EQ(listener->address().to_string(), name);
  auto client = ferry::UnixSocket::connect_for(name, 10s);
  ASSERT_TRUE(client) << client.error().message();
  auto server_side = listener->accept_for(10s);
  ASSERT_TRUE(server_side);
  auto identity = server_side->peer_identity();
  ASSERT_TRUE(identity) << identity.error().message();
  EXPECT_EQ(identity->pid, ::getpid());
  EXPECT_EQ(identity->uid, ::geteuid());
  EXPECT_EQ(identity->gid, ::getegid());
  EXPECT_TRUE(identity->pid_attested);
  auto pair = ferry::UnixSocket::pair();
  ASSERT_TRUE(pair);
  auto paired = pair->first.peer_identity();
  ASSERT_TRUE(paired);
  EXPECT_EQ(paired->pid, ::getpid());
}

TEST(TcpSocket, NoDelayIsOnBothEndsAndTheListenerReusesAddresses) {
  auto listener = ferry::TcpSocket::listen("127.0.0.1", 0);
  ASSERT_TRUE(listener) << listener.error().message();
  ASSERT_NE(listener->port(), 0);
  int reuse = 0;
  socklen_t size = sizeof reuse;
  ASSERT_EQ(::getsockopt(listener->fd().get(), SOL_SOCKET, SO_REUSEADDR, &reuse, &size), 0);
  EXPECT_EQ(reuse, 1);
  auto client = ferry::TcpSocket::connect_for("localhost", listener->port(), 10s);
  if (!client) client = ferry::TcpSocket::connect_for("127.0.0.1", listener->port(), 10s);
  ASSERT_TRUE(client) << client.error().message();
  auto server_side = listener->accept_for(10s);
  ASSERT_TRUE(server_side);
  for (const ferry::StreamSocket* socket : {&*client, &*server_side}) {
    int no_delay = 0;
    size = sizeof no_delay;
    ASSERT_EQ(::getsockopt(socket->fd().get(), IPPROTO_TCP, TCP_NODELAY, &no_delay, &size), 0);
    EXPECT_EQ(no_delay, 1) << socket->name();
  }
  auto identity = server_side->peer_identity();
  ASSERT_FALSE(identity);
  EXPECT_EQ(identity.error().code(), errc::unsupported);
  auto peer = server_side->peer_address();
  ASSERT_TRUE(peer);
  EXPECT_EQ(peer->to_string().rfind("127.0.0.1:", 0), 0u) << peer->to_string();
}

TEST(TcpSocket, NobodyListeningIsNotFoundAndBadHostsAreErrors) {
  auto listener = ferry::TcpSocket::listen("127.0.0.1", 0);
  ASSERT_TRUE(listener);
  const auto port = listener->port();
  listener->close();
  auto refused = ferry::TcpSocket::connect_for("127.0.0.1", port, 10s);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), errc::not_found);
  auto bad = ferry::TcpSocket::connect_for("no such host.invalid", 1, 1s);
  ASSERT_FALSE(bad);
}

// ---- datagrams ---------------------------------------------------------------

TEST(Datagram, OneMessagePerDatagramAndTruncationIsReported) {
  auto pair = ferry::UnixDatagram::pair();
  ASSERT_TRUE(pair);
  auto& [a, b] = *pair;
  ASSERT_TRUE(a.send(bytes_of("one")));
  ASSERT_TRUE(a.send(bytes_of("two two")));
  ASSERT_TRUE(a.send(patterned(100)));
  std::array<std::byte, 64> buffer{};
  auto first = b.receive_for(buffer, 10s);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->size, 3u);
  auto size = b.next_size();
  ASSERT_TRUE(size);
  EXPECT_EQ(*size, 7u);
  auto second = b.receive(buffer);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->size, 7u);
  EXPECT_EQ(std::memcmp(buffer.data(), "two two", 7), 0);
  auto cut = b.receive(buffer);
  ASSERT_FALSE(cut);
  EXPECT_EQ(cut.error().code(), errc::limit_reached);
  EXPECT_NE(cut.error().detail().find("100"), std::string::npos);
  EXPECT_NE(cut.error().detail().find("64"), std::string::npos);
  auto empty = b.try_receive(buffer);
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code(), errc::would_block);
  auto late = b.receive_for(buffer, 20ms);
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code(), errc::timed_out);
}

TEST(Datagram, BoundUnixAndUdpSocketsExchangeWithAddresses) {
  ferry::test::TempDir directory;
  auto server = ferry::UnixDatagram::bind(directory.file("dgram"));
  ASSERT_TRUE(server) << server.error().message();
  auto client = ferry::UnixDatagram::bind(directory.file("client"));
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->connect(directory.file("dgram")));
  ASSERT_TRUE(client->send(bytes_of("ping")));
  std::array<std::byte, 16> buffer{};
  auto got = server->receive_for(buffer, 10s);
  ASSERT_TRUE(got) << got.error().message();
  EXPECT_EQ(got->from.to_string(), directory.file("client"));
  ASSERT_TRUE(server->send_to(got->from, bytes_of("pong")));
  auto reply = client->receive_for(buffer, 10s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->size, 4u);

  auto udp_server = ferry::UdpSocket::bind("127.0.0.1", 0);
  ASSERT_TRUE(udp_server) << udp_server.error().message();
  auto address = udp_server->local_address();
  ASSERT_TRUE(address);
  auto udp_client = ferry::UdpSocket::bind("127.0.0.1", 0);
  ASSERT_TRUE(udp_client);
  ASSERT_TRUE(udp_client->send_to(*address, bytes_of("udp ping")));
  auto udp_got = udp_server->receive_for(buffer, 10s);
  ASSERT_TRUE(udp_got) << udp_got.error().message();
  EXPECT_EQ(udp_got->size, 8u);
  ASSERT_TRUE(udp_server->send_to(udp_got->from, bytes_of("udp pong")));
  auto udp_reply = udp_client->receive_for(buffer, 10s);
  ASSERT_TRUE(udp_reply);
  EXPECT_EQ(udp_reply->from.to_string(), address->to_string());
  // "localhost" may resolve to ::1 first: connect picks the socket's family.
  ASSERT_TRUE(udp_client->connect("localhost", address->port()));
  ASSERT_TRUE(udp_client->send(bytes_of("connected")));
  auto connected = udp_server->receive_for(buffer, 10s);
  ASSERT_TRUE(connected);
  EXPECT_EQ(connected->size, 9u);
}

}  // namespace
