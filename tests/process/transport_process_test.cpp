// Transports between real processes: a writer killed with SIGKILL in the
// middle of a frame (on every stream kind), writes into a closed pipe or
// socket with SIGPIPE at its default disposition, SO_PEERCRED from a child
// running as another user, and a pipe end handed across fork and exec.
// Children are made before any thread exists (nothing here starts threads).
#include <signal.h>
#include <unistd.h>

#include <string>
#include <type_traits>

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
using ferry::test::Child;
using ferry::test::bytes_of;
using ferry::test::StreamKind;
using ferry::test::text_of;

constexpr auto kWatchdog = 120s;


// ---- a writer dies in the middle of a frame -------------------------------------

class WriterDeath : public ::testing::TestWithParam<StreamKind> {};

// How much of the second frame the writer gets out before it is killed.
enum class Cut { inside_header, after_header, inside_payload };

TEST_P(WriterDeath, TheSurvivorGetsTheWholeFramesThenPeerGoneAndNoPartOfTheCutOne) {
  const StreamKind kind = GetParam();
  const std::size_t rounds = ferry::test::scaled(2);
  for (std::size_t round = 0; round < rounds; ++round) {
    for (Cut cut : {Cut::inside_header, Cut::after_header, Cut::inside_payload}) {
      ferry::test::TempDir directory;
      std::optional<ferry::Pipe> pipe;
      std::optional<ferry::Listener> listener;
      std::optional<ByteStream> reader;
      const std::string fifo_path = directory.file("fifo");
      if (kind == StreamKind::pipe) {
        auto made = ferry::Pipe::create();
        ASSERT_TRUE(made);
        pipe.emplace(std::move(*made));
      } else if (kind == StreamKind::fifo) {
        ASSERT_TRUE(ferry::Fifo::create(fifo_path));
        auto opened = ferry::Fifo::try_open_reader(fifo_path);
        ASSERT_TRUE(opened);
        reader.emplace(std::move(*opened));
      } else {
        auto listening = ferry::test::listen_for(kind, directory);
        if (!listening && kind == StreamKind::tcp6) GTEST_SKIP() << "no IPv6 here: " << listening.error().message();
        ASSERT_TRUE(listening) << listening.error().message();
        listener.emplace(std::move(*listening));
      }
      ferry::test::Event written;
      Child writer = Child::spawn([&]() -> int {
        ByteStream stream;
        if (kind == StreamKind::pipe) {
          stream = std::move(pipe->writer);
        } else if (kind == StreamKind::fifo) {
          auto opened = ferry::Fifo::open_writer_for(fifo_path, 60s);
          FERRY_CHILD_CHECK(opened);
          stream = std::move(*opened);
        } else {
          auto connected = ferry::test::connect_to(kind, *listener, 60s);
          FERRY_CHILD_CHECK(connected);
          stream = std::move(*connected);
        }
        FramedStream framed(std::move(stream));
        FERRY_CHILD_CHECK(framed.send_frame(bytes_of("whole frame")));
        const auto header = ferry::frame_header(1000);
        const std::size_t header_bytes = cut == Cut::inside_header ? 5 : 8;
        FERRY_CHILD_CHECK(framed.stream().write_all(std::span(header).first(header_bytes)));
        if (cut == Cut::inside_payload) {
          const std::string half(500, 'h');
          FERRY_CHILD_CHECK(framed.stream().write_all(bytes_of(half)));
        }
        written.signal();
        for (;;) ::pause();  // until SIGKILL
      });
      if (kind == StreamKind::pipe) {
        reader.emplace(std::move(pipe->reader));
        pipe->writer.close();  // the child holds the only write end now
      } else if (listener) {
        auto accepted = listener->accept_for(kWatchdog);
        ASSERT_TRUE(accepted) << accepted.error().message();
        reader.emplace(std::move(*accepted));
      }
      ASSERT_TRUE(written.wait(kWatchdog));
      writer.kill(SIGKILL);
      ASSERT_EQ(writer.wait(), 128 + SIGKILL);

      FramedStream survivor(std::move(*reader));
      auto whole = survivor.receive_frame_for(kWatchdog);
      ASSERT_TRUE(whole) << whole.error().message();
      EXPECT_EQ(text_of(*whole), "whole frame");
      auto cut_frame = survivor.receive_frame_for(kWatchdog);
      ASSERT_FALSE(cut_frame) << "a partial frame was delivered";
      EXPECT_EQ(cut_frame.error().code(), errc::peer_gone) << cut_frame.error().message();
      EXPECT_NE(cut_frame.error().detail().find("inside a frame"), std::string::npos) << cut_frame.error().message();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Transport, WriterDeath, ferry::test::all_stream_kinds(), ferry::test::stream_kind_name);

// ---- no SIGPIPE death ------------------------------------------------------------

class NoSigpipe : public ::testing::TestWithParam<StreamKind> {};

// In a child, so that a SIGPIPE death is an exit status (128 + 13), not the
// end of the test program.
TEST_P(NoSigpipe, WritingIntoAClosedStreamIsPeerGoneWithSigpipeAtItsDefault) {
  const StreamKind kind = GetParam();
  Child child = Child::spawn([&]() -> int {
    // Dispositions set to "ignore" survive exec; make sure this really is
    // the default, and check it.
    ::signal(SIGPIPE, SIG_DFL);
    struct sigaction current {};
    FERRY_CHILD_CHECK(::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL);
    // Pipes both ways: RWF_NOSIGNAL (Linux 6.18+), and the signal mask.
    for (const auto guard : {ferry::detail::PipeWriteGuard::write_flag, ferry::detail::PipeWriteGuard::signal_mask}) {
      ferry::detail::set_pipe_write_guard(guard);
      auto pair = ferry::test::make_stream_pair(kind);
      if (!pair.unavailable.empty()) return 0;
      FERRY_CHILD_CHECK(pair.writer.valid() && pair.reader.valid());
      pair.reader.close();
      ferry::result<void> written;
      for (int attempt = 0; attempt < 1000 && written; ++attempt) {
        written = pair.writer.write_all_for(bytes_of("nobody reads this"), 10s);
        if (written) ::usleep(1000);  // TCP: the reset has to come back first
      }
      FERRY_CHILD_CHECK(!written && written.error().code() == errc::peer_gone);
      FramedStream framed(std::move(pair.writer));
      auto frame = framed.send_frame(bytes_of("frame"));
      FERRY_CHILD_CHECK(!frame && frame.error().code() == errc::peer_gone);
    }
    FERRY_CHILD_CHECK(::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL);
    sigset_t pending;
    sigpending(&pending);
    FERRY_CHILD_CHECK(sigismember(&pending, SIGPIPE) == 0);
    return 0;
  });
  const int status = child.wait_for(kWatchdog);
  EXPECT_NE(status, 128 + SIGPIPE) << "killed by SIGPIPE";
  EXPECT_EQ(status, 0);
}

INSTANTIATE_TEST_SUITE_P(Transport, NoSigpipe, ferry::test::all_stream_kinds(), ferry::test::stream_kind_name);

// ---- peer credentials ------------------------------------------------------------

static_assert(std::is_same_v<decltype(std::declval<ferry::StreamSocket&>().peer_identity()),
                             ferry::result<ferry::SenderIdentity>>,
              "UNIX sockets report the same identity type as the Mailbox");

TEST(PeerCredentials, AClientRunningAsAnotherUserIsSeenAsThatUser) {
  ferry::test::TempDir directory(0755);  // the other user may reach the socket
  const std::string path = directory.file("creds.sock");
  auto listener = ferry::UnixSocket::listen(path, {.mode = 0666});
  ASSERT_TRUE(listener) << listener.error().message();
  Child client = Child::spawn([&]() -> int {
    ferry::test::become_other_user();
    auto connected = ferry::UnixSocket::connect_for(path, 60s);
    FERRY_CHILD_CHECK(connected);
    FramedStream framed(std::move(*connected));
    FERRY_CHILD_CHECK(framed.send_frame(bytes_of("who am I")));
    auto reply = framed.receive_frame_for(60s);
    FERRY_CHILD_CHECK(reply && text_of(*reply) == "uid 65534");
    return 0;
  });
  auto accepted = listener->accept_for(kWatchdog);
  ASSERT_TRUE(accepted) << accepted.error().message();
  auto identity = accepted->peer_identity();
  ASSERT_TRUE(identity) << identity.error().message();
  EXPECT_EQ(identity->uid, ferry::test::kOtherUid);
  EXPECT_EQ(identity->gid, ferry::test::kOtherGid);
  EXPECT_EQ(identity->pid, client.pid());
  EXPECT_TRUE(identity->pid_attested);
  FramedStream framed(std::move(*accepted));
  auto request = framed.receive_frame_for(kWatchdog);
  ASSERT_TRUE(request);
  ASSERT_TRUE(framed.send_frame(bytes_of("uid " + std::to_string(identity->uid))));
  EXPECT_EQ(client.wait_for(kWatchdog), 0);
}

TEST(PeerCredentials, AnotherUserCannotConnectToAPrivateSocket) {
  ferry::test::TempDir directory(0755);
  const std::string path = directory.file("private.sock");
  auto listener = ferry::UnixSocket::listen(path);  // 0600
  ASSERT_TRUE(listener);
  Child client = Child::spawn([&]() -> int {
    ferry::test::become_other_user();
    auto connected = ferry::UnixSocket::connect_for(path, 10s);
    FERRY_CHILD_CHECK(!connected && connected.error().code() == errc::permission_denied);
    return 0;
  });
  EXPECT_EQ(client.wait_for(kWatchdog), 0);
}

// ---- handing a pipe end to a child -------------------------------------------------

TEST(PipeInheritance, AnExecedProgramWritesIntoTheInheritedEnd) {
  auto pipe = ferry::Pipe::create();
  ASSERT_TRUE(pipe);
  auto inherited = pipe->writer.inheritable(10);
  ASSERT_TRUE(inherited);
  Child shell = Child::exec("/bin/bash", {"-c", "printf 'from exec' >&" + std::to_string(inherited->get())});
  inherited->reset();
  pipe->writer.close();  // now only the child writes: EOF comes when it exits
  std::string received;
  for (;;) {
    std::array<std::byte, 64> buffer{};
    auto got = pipe->reader.read_some_for(buffer, kWatchdog);
    ASSERT_TRUE(got) << got.error().message();
    if (*got == 0) break;
    received.append(reinterpret_cast<const char*>(buffer.data()), *got);
  }
  EXPECT_EQ(received, "from exec");
  EXPECT_EQ(shell.wait_for(kWatchdog), 0);
}

TEST(PipeInheritance, ANotInheritedEndDoesNotReachAnExecedProgram) {
  auto pipe = ferry::Pipe::create();
  ASSERT_TRUE(pipe);
  // bash tries to write to the pipe's own (close-on-exec) number: it must fail.
  Child shell = Child::exec("/bin/bash", {"-c", "printf leak >&" + std::to_string(pipe->writer.fd().get())});
  EXPECT_NE(shell.wait_for(kWatchdog), 0);
  std::array<std::byte, 8> buffer{};
  auto got = pipe->reader.try_read_some(buffer);
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code(), errc::would_block);
}

TEST(PipeInheritance, AChildAdoptsTheInheritedNumberAndSendsFrames) {
  auto pipe = ferry::Pipe::create();
  ASSERT_TRUE(pipe);
  auto inherited = pipe->writer.inheritable(10);
  ASSERT_TRUE(inherited);
  const int number = inherited->get();
  const std::size_t frames = ferry::test::scaled(100);
  Child child = Child::spawn([&]() -> int {
    auto adopted = ferry::Pipe::adopt_writer(number);
    FERRY_CHILD_CHECK(adopted);
    FramedStream framed(std::move(*adopted));
    for (std::size_t i = 0; i < frames; ++i) FERRY_CHILD_CHECK(framed.send_frame(bytes_of("frame " + std::to_string(i))));
    return 0;
  });
  inherited->reset();
  pipe->writer.close();
  FramedStream framed(std::move(pipe->reader));
  for (std::size_t i = 0; i < frames; ++i) {
    auto frame = framed.receive_frame_for(kWatchdog);
    ASSERT_TRUE(frame) << frame.error().message();
    EXPECT_EQ(text_of(*frame), "frame " + std::to_string(i));
  }
  auto end = framed.receive_frame_for(kWatchdog);
  ASSERT_FALSE(end);
  EXPECT_EQ(end.error().code(), errc::peer_gone);
  EXPECT_EQ(child.wait_for(kWatchdog), 0);
}

}  // namespace
