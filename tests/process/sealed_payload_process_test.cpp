// Sealed memfd payloads handed from one process to another over a UNIX
// socket (SCM_RIGHTS): the bytes arrive whole, the sender can no longer change
// or shrink them, and a payload whose seals are missing is refused.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <gtest/gtest.h>

#include "ferry/ferry.hpp"
#include "ferry_test.hpp"

namespace {

using namespace std::chrono_literals;
using ferry::errc;
using ferry::Fd;
using ferry::SealedPayload;
using ferry::StreamSocket;
using ferry::UnixSocket;
using ferry::test::Child;

constexpr auto kWatchdog = 120s;

std::byte pattern(std::size_t i) { return static_cast<std::byte>((i * 7 + (i >> 12)) & 0xff); }

std::span<const std::byte> note() {
  static const std::byte kNote[1] = {std::byte{'p'}};
  return kNote;
}

// The child's exit codes for what the sender tried after sealing (0: each
// was refused, as it must be).
enum Attempt { kWrite = 10, kShrink = 11, kGrow = 12, kMapWritable = 13 };

int send_sealed(StreamSocket& socket, std::size_t size) {
  auto payload = SealedPayload::create(size, "test-payload");
  FERRY_CHILD_CHECK(payload);
  std::span<std::byte> bytes = payload->data();
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = pattern(i);
  FERRY_CHILD_CHECK(payload->seal());
  FERRY_CHILD_CHECK(payload->data().empty());
  FERRY_CHILD_CHECK(socket.send_descriptor(payload->fd(), note()));
  // The sender still holds the memfd, and still may not change it.
  const int fd = payload->fd().get();
  const char scribble = 'x';
  if (::pwrite(fd, &scribble, 1, 0) != -1 || errno != EPERM) return kWrite;
  if (::ftruncate(fd, static_cast<off_t>(size / 2)) != -1 || errno != EPERM) return kShrink;
  if (::ftruncate(fd, static_cast<off_t>(size * 2)) != -1 || errno != EPERM) return kGrow;
  if (::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) != MAP_FAILED || errno != EPERM) {
    return kMapWritable;
  }
  return 0;
}

TEST(SealedPayloadAcrossProcesses, ArrivesWholeAndItsSenderCannotChangeOrShrinkIt) {
  for (const std::size_t size : {std::size_t{1}, std::size_t{4096}, ferry::test::scaled(16) << 20}) {
    auto sockets = UnixSocket::pair();
    ASSERT_TRUE(sockets) << sockets.error().message();
    auto sender = Child::spawn([&] { return send_sealed(sockets->first, size); });
    std::byte received_note[1];
    auto fd = sockets->second.receive_descriptor(received_note, ferry::detail::WaitLimit::after(kWatchdog));
    ASSERT_TRUE(fd) << fd.error().message();
    EXPECT_EQ(received_note[0], note()[0]);
    auto payload = SealedPayload::adopt(std::move(*fd));
    ASSERT_TRUE(payload) << payload.error().message();
    ASSERT_EQ(payload->size(), size);
    EXPECT_TRUE(payload->sealed());
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < size; ++i) wrong += payload->bytes()[i] != pattern(i) ? 1 : 0;
    EXPECT_EQ(wrong, 0u) << size;
    EXPECT_EQ(sender.wait_for(kWatchdog), 0) << "the sender could change the sealed payload (see Attempt)";
  }
}

TEST(SealedPayloadAcrossProcesses, APayloadWhoseSealsAreMissingIsRefused) {
  struct Case {
    const char* what;
    unsigned memfd_flags;
    int seals;
  };
  const Case cases[] = {
      {"no seals at all", MFD_ALLOW_SEALING, 0},
      {"grow and shrink, but not write", MFD_ALLOW_SEALING, F_SEAL_GROW | F_SEAL_SHRINK},
      {"write and grow, but not shrink", MFD_ALLOW_SEALING, F_SEAL_WRITE | F_SEAL_GROW},
      {"a memfd that cannot be sealed", 0, 0},
  };
  for (const Case& c : cases) {
    auto sockets = UnixSocket::pair();
    ASSERT_TRUE(sockets);
    auto sender = Child::spawn([&] {
      Fd fd(::memfd_create("unsealed", MFD_CLOEXEC | c.memfd_flags));
      FERRY_CHILD_CHECK(fd);
      FERRY_CHILD_CHECK(::ftruncate(fd.get(), 4096) == 0);
      if (c.seals != 0) FERRY_CHILD_CHECK(::fcntl(fd.get(), F_ADD_SEALS, c.seals) == 0);
      FERRY_CHILD_CHECK(sockets->first.send_descriptor(fd, note()));
      return 0;
    });
    std::byte received_note[1];
    auto fd = sockets->second.receive_descriptor(received_note, ferry::detail::WaitLimit::after(kWatchdog));
    ASSERT_TRUE(fd) << fd.error().message();
    auto refused = SealedPayload::adopt(std::move(*fd));
    ASSERT_FALSE(refused) << c.what;
    EXPECT_EQ(refused.error().code(), errc::invalid_argument) << c.what;
    EXPECT_NE(refused.error().message().find("refused"), std::string::npos) << refused.error().message();
    EXPECT_EQ(sender.wait_for(kWatchdog), 0) << c.what;
  }
  // Not a memfd at all.
  int pipe_ends[2];
  ASSERT_EQ(::pipe2(pipe_ends, O_CLOEXEC), 0);
  Fd read_end(pipe_ends[0]), write_end(pipe_ends[1]);
  auto not_memfd = SealedPayload::adopt(std::move(read_end));
  ASSERT_FALSE(not_memfd);
  EXPECT_EQ(not_memfd.error().code(), errc::invalid_argument);
}

TEST(SealedPayloadAcrossProcesses, AMessageWithoutADescriptorIsAnErrorNotAHang) {
  auto sockets = UnixSocket::pair();
  ASSERT_TRUE(sockets);
  ASSERT_TRUE(sockets->first.write_all(note()));
  std::byte received_note[1];
  auto none = sockets->second.receive_descriptor(received_note, ferry::detail::WaitLimit::after(kWatchdog));
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code(), errc::invalid_argument);
  EXPECT_NE(none.error().message().find("0 descriptors"), std::string::npos) << none.error().message();
  sockets->first.close();
  auto gone = sockets->second.receive_descriptor(received_note, ferry::detail::WaitLimit::after(kWatchdog));
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code(), errc::peer_gone);
}

}  // namespace
