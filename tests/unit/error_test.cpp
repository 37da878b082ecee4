#include "ferry/os/error.hpp"

#include <cerrno>
#include <string>

#include <gtest/gtest.h>

namespace {

using ferry::errc;
using ferry::error;
using ferry::result;

TEST(Error, MessageNamesObjectReasonDetailAndErrno) {
  const error e(errc::permission_denied, "posix segment 'orders'", "owned by uid 1000", EACCES);
  EXPECT_EQ(e.message(),
            "posix segment 'orders': permission denied: owned by uid 1000 (EACCES: Permission denied)");
  EXPECT_EQ(e.code(), errc::permission_denied);
  EXPECT_EQ(e.sys_errno(), EACCES);
  EXPECT_EQ(e.object(), "posix segment 'orders'");
  EXPECT_TRUE(e == errc::permission_denied);
}

TEST(Error, MessageWithoutDetailOrErrno) {
  EXPECT_EQ(error(errc::empty, "channel 'x'").message(), "channel 'x': empty");
}

TEST(Error, FromErrnoMapsTheCommonCases) {
  EXPECT_EQ(error::from_errno(ENOENT, "x").code(), errc::not_found);
  EXPECT_EQ(error::from_errno(EEXIST, "x").code(), errc::already_exists);
  EXPECT_EQ(error::from_errno(EACCES, "x").code(), errc::permission_denied);
  EXPECT_EQ(error::from_errno(EPERM, "x").code(), errc::permission_denied);
  EXPECT_EQ(error::from_errno(ENOSPC, "x").code(), errc::no_space);
  EXPECT_EQ(error::from_errno(ETIMEDOUT, "x").code(), errc::timed_out);
  EXPECT_EQ(error::from_errno(ECANCELED, "x").code(), errc::cancelled);
  EXPECT_EQ(error::from_errno(EOWNERDEAD, "x").code(), errc::owner_died);
  EXPECT_EQ(error::from_errno(EXDEV, "x").code(), errc::system);
  EXPECT_EQ(error::from_errno(EXDEV, "x").sys_errno(), EXDEV);
}

TEST(Error, EveryCodeHasText) {
  for (int code = static_cast<int>(errc::invalid_argument); code <= static_cast<int>(errc::system);
       ++code) {
    EXPECT_NE(ferry::to_string(static_cast<errc>(code)), "unknown error") << code;
  }
}

TEST(Error, CancelledHasItsOwnCodeAndText) {
  const error e(errc::cancelled, "rpc call of 'add'", "cancelled by the caller");
  EXPECT_NE(e.code(), errc::timed_out);
  EXPECT_EQ(ferry::to_string(errc::cancelled), "cancelled");
  EXPECT_EQ(e.message(), "rpc call of 'add': cancelled: cancelled by the caller");
}

TEST(Error, ContextIsPrepended) {
  error e(errc::corrupt, "segment 'a'", "bad magic");
  e.add_context("while attaching");
  EXPECT_EQ(e.detail(), "while attaching: bad magic");
}

result<int> parse_positive(int value) {
  if (value <= 0) return error(errc::invalid_argument, "value", "must be positive");
  return value;
}

TEST(Result, HoldsValueOrError) {
  auto good = parse_positive(7);
  ASSERT_TRUE(good);
  EXPECT_EQ(*good, 7);
  EXPECT_EQ(good.value_or(0), 7);

  auto bad = parse_positive(-1);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), errc::invalid_argument);
  EXPECT_EQ(bad.value_or(42), 42);
}

TEST(Result, VoidResult) {
  result<void> fine;
  EXPECT_TRUE(fine);
  result<void> broken = error(errc::busy, "lock");
  ASSERT_FALSE(broken);
  EXPECT_EQ(broken.error().code(), errc::busy);
}

TEST(Result, MoveOnlyValues) {
  result<std::unique_ptr<int>> owned = std::make_unique<int>(5);
  ASSERT_TRUE(owned);
  std::unique_ptr<int> taken = std::move(owned).value();
  EXPECT_EQ(*taken, 5);
}

TEST(ResultDeathTest, ValueOfAnErrorAbortsWithTheMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto bad = parse_positive(0);
  EXPECT_DEATH((void)bad.value(), "value: invalid argument: must be positive");
  result<void> broken = error(errc::busy, "lock");
  EXPECT_DEATH(broken.value(), "lock: busy");
  EXPECT_DEATH((void)parse_positive(1).error(), "called on a value");
}

}  // namespace
