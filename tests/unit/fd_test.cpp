#include "ferry/os/fd.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace {

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

int open_devnull() { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); }

TEST(Fd, ClosesWhatItOwnsOnDestruction) {
  int raw = open_devnull();
  {
    ferry::Fd fd(raw);
    EXPECT_TRUE(fd.valid());
    EXPECT_TRUE(is_open(raw));
  }
  EXPECT_FALSE(is_open(raw));
}

TEST(Fd, MoveTransfersOwnership) {
  int raw = open_devnull();
  ferry::Fd first(raw);
  ferry::Fd second(std::move(first));
  EXPECT_FALSE(first.valid());
  EXPECT_EQ(second.get(), raw);
  ferry::Fd third;
  third = std::move(second);
  EXPECT_EQ(third.get(), raw);
  EXPECT_TRUE(is_open(raw));
  third.reset();
  EXPECT_FALSE(is_open(raw));
}

TEST(Fd, ReleaseGivesUpWithoutClosing) {
  ferry::Fd fd(open_devnull());
  const int raw = fd.release();
  EXPECT_FALSE(fd.valid());
  EXPECT_TRUE(is_open(raw));
  ::close(raw);
}

TEST(Fd, DuplicateIsCloseOnExecAndInheritableIsNot) {
  ferry::Fd fd(open_devnull());
  auto copy = fd.duplicate();
  ASSERT_TRUE(copy);
  EXPECT_NE(copy->get(), fd.get());
  EXPECT_TRUE(::fcntl(copy->get(), F_GETFD) & FD_CLOEXEC);
  auto inheritable = fd.dup_inheritable(50);
  ASSERT_TRUE(inheritable);
  EXPECT_GE(inheritable->get(), 50);
  EXPECT_FALSE(::fcntl(inheritable->get(), F_GETFD) & FD_CLOEXEC);
}

TEST(Fd, DuplicateOfInvalidIsATypedError) {
  ferry::Fd none;
  auto copy = none.duplicate();
  ASSERT_FALSE(copy);
  EXPECT_EQ(copy.error().code(), ferry::errc::invalid_argument);
  EXPECT_EQ(copy.error().sys_errno(), EBADF);
}

}  // namespace
