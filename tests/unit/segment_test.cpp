// Segment behaviour inside one process: every kind, every check on open,
// and every kind of bad input. Multi-process behaviour is in tests/process.
#include "ferry/os/segment.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include <gtest/gtest.h>

#include "ferry/os/detail/segment_layout.hpp"
#include "ferry/os/process.hpp"
#include "ferry_test.hpp"

namespace {

using ferry::Access;
using ferry::errc;
using ferry::OpenOptions;
using ferry::Persistence;
using ferry::Segment;
using ferry::SegmentKind;
using ferry::SegmentOptions;

std::string shm_path(const std::string& name) { return "/dev/shm/ferry." + name; }
bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// Each test gets a name for its kind: a posix name, a file path, or an
// existing path for the System V key.
class SegmentKinds : public ::testing::TestWithParam<SegmentKind> {
 protected:
  std::string name() {
    if (name_.empty()) {
      switch (GetParam()) {
        case SegmentKind::posix:
        case SegmentKind::memfd: name_ = ferry::test::unique_name(); break;
        case SegmentKind::file: name_ = dir_.file("segment"); break;
        case SegmentKind::sysv:
          name_ = dir_.file("key");
          std::ofstream(name_) << "key";
          break;
      }
    }
    return name_;
  }
  ~SegmentKinds() override {
    if (GetParam() != SegmentKind::memfd && !name_.empty()) (void)Segment::destroy(name_, GetParam());
  }
  ferry::test::TempDir dir_;
  std::string name_;
};

// The kinds that have a name to open (memfds are attached by descriptor).
class NamedSegmentKinds : public SegmentKinds {};

TEST_P(SegmentKinds, CreateThenWriteThenOpenAgainSeesTheBytes) {
  auto created = Segment::create(name(), {.kind = GetParam(), .size = 10000});
  ASSERT_TRUE(created) << created.error().message();
  EXPECT_EQ(created->size(), 10000u);
  EXPECT_EQ(created->data().size(), 10000u);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(created->data().data()) % 4096, 0u) << "page aligned";
  std::memcpy(created->data().data(), "hello", 5);

  const auto info = created->info();
  EXPECT_EQ(info.kind, GetParam());
  EXPECT_EQ(info.persistence, ferry::default_persistence(GetParam()));
  EXPECT_EQ(info.creator_uid, ::geteuid());
  EXPECT_EQ(info.creator_pid, ::getpid());
  EXPECT_EQ(info.mode, 0600u);

  auto second = GetParam() == SegmentKind::memfd
                    ? Segment::attach(*created->fd().duplicate())
                    : Segment::open(name(), {.kind = GetParam()});
  ASSERT_TRUE(second) << second.error().message();
  EXPECT_EQ(second->size(), 10000u);
  EXPECT_EQ(std::memcmp(second->data().data(), "hello", 5), 0);
  EXPECT_NE(second->data().data(), created->data().data()) << "a second, independent mapping";
}

TEST_P(SegmentKinds, CreateIsExclusive) {
  auto first = Segment::create(name(), {.kind = GetParam(), .size = 64});
  ASSERT_TRUE(first) << first.error().message();
  if (GetParam() == SegmentKind::memfd) return;  // memfds have no name to collide on
  auto again = Segment::create(name(), {.kind = GetParam(), .size = 64});
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), errc::already_exists);
}

TEST_P(SegmentKinds, SizeZeroIsRefused) {
  auto made = Segment::create(name(), {.kind = GetParam(), .size = 0});
  ASSERT_FALSE(made);
  EXPECT_EQ(made.error().code(), errc::invalid_argument);
  EXPECT_NE(made.error().message().find("size 0"), std::string::npos) << made.error().message();
}

TEST_P(NamedSegmentKinds, OpeningWithTheWrongSizeIsRefused) {
  auto made = Segment::create(name(), {.kind = GetParam(), .size = 4096});
  ASSERT_TRUE(made) << made.error().message();
  auto opened = Segment::open(name(), {.kind = GetParam(), .size = 8192});
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code(), errc::size_mismatch);
  EXPECT_NE(opened.error().message().find("holds 4096 bytes, 8192 were asked for"), std::string::npos)
      << opened.error().message();
  EXPECT_TRUE(Segment::open(name(), {.kind = GetParam(), .size = 4096}));
}

TEST_P(NamedSegmentKinds, OpeningWhatDoesNotExistIsNotFound) {
  auto opened = Segment::open(name(), {.kind = GetParam()});
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code(), errc::not_found) << opened.error().message();
  EXPECT_NE(opened.error().object().find(name()), std::string::npos);
}

TEST_P(SegmentKinds, ObjectTypeIsChecked) {
  const auto unknown = static_cast<ferry::ObjectType>(77);
  auto made = Segment::create(name(), {.kind = GetParam(), .size = 64, .object_type = unknown});
  ASSERT_TRUE(made) << made.error().message();
  EXPECT_EQ(made->info().object_type, unknown);
  EXPECT_EQ(ferry::to_string(unknown), "type 77");
  if (GetParam() == SegmentKind::memfd) return;
  auto wrong = Segment::open(name(), {.kind = GetParam(), .object_type = ferry::ObjectType::segment});
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code(), errc::invalid_argument);
  EXPECT_NE(wrong.error().message().find("holds a type 77, not a segment"), std::string::npos)
      << wrong.error().message();
  EXPECT_TRUE(Segment::open(name(), {.kind = GetParam(), .object_type = unknown}));
}

TEST_P(SegmentKinds, AttachTableFullIsATypedError) {
  auto made = Segment::create(name(), {.kind = GetParam(), .size = 64, .max_attachments = 2});
  ASSERT_TRUE(made) << made.error().message();
  auto open_again = [&] {
    return GetParam() == SegmentKind::memfd ? Segment::attach(*made->fd().duplicate())
                                            : Segment::open(name(), {.kind = GetParam()});
  };
  auto second = open_again();
  ASSERT_TRUE(second) << second.error().message();
  auto third = open_again();
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().code(), errc::full);
  ASSERT_TRUE(second->detach());
  EXPECT_TRUE(open_again()) << "a detached slot is free again";
}

TEST_P(NamedSegmentKinds, ReadOnlyOpenDoesNotTakeASlot) {
  auto made = Segment::create(name(), {.kind = GetParam(), .size = 64, .max_attachments = 1});
  ASSERT_TRUE(made) << made.error().message();
  std::memcpy(made->data().data(), "ro", 2);
  auto reader = Segment::open(name(), {.kind = GetParam(), .access = Access::read_only});
  ASSERT_TRUE(reader) << reader.error().message();
  EXPECT_EQ(std::memcmp(reader->data().data(), "ro", 2), 0);
}

TEST_P(SegmentKinds, ModeIsAppliedExactlyWhateverTheUmask) {
  const mode_t old_mask = ::umask(077);
  auto made = Segment::create(name(), {.kind = GetParam(), .size = 64, .mode = 0644});
  ::umask(old_mask);
  ASSERT_TRUE(made) << made.error().message();
  EXPECT_EQ(made->info().mode, 0644u);
  if (GetParam() == SegmentKind::sysv) return;
  struct stat facts {};
  ASSERT_EQ(::fstat(made->fd().get(), &facts), 0);
  EXPECT_EQ(facts.st_mode & 0777, 0644u);
}

TEST_P(SegmentKinds, DestroyRemovesTheNameButKeepsMappings) {
  if (GetParam() == SegmentKind::memfd) {
    EXPECT_EQ(Segment::destroy("x", SegmentKind::memfd).error().code(), errc::invalid_argument);
    return;
  }
  auto made = Segment::create(name(), {.kind = GetParam(), .size = 64});
  ASSERT_TRUE(made) << made.error().message();
  std::memcpy(made->data().data(), "kept", 4);
  ASSERT_TRUE(Segment::destroy(name(), GetParam()));
  EXPECT_EQ(Segment::open(name(), {.kind = GetParam()}).error().code(), errc::not_found);
  EXPECT_EQ(std::memcmp(made->data().data(), "kept", 4), 0);
  EXPECT_EQ(Segment::destroy(name(), GetParam()).error().code(), errc::not_found);
}

TEST_P(SegmentKinds, PrefaultKeepsTheBytes) {
  auto made = Segment::create(name(), {.kind = GetParam(), .size = 1 << 20});
  ASSERT_TRUE(made) << made.error().message();
  std::memcpy(made->data().data() + 12345, "kept", 4);
  ASSERT_TRUE(made->prefault());
  EXPECT_EQ(std::memcmp(made->data().data() + 12345, "kept", 4), 0);
  ASSERT_TRUE(made->detach());
  EXPECT_EQ(made->prefault().error().code(), errc::invalid_argument) << "not attached";
}

TEST_P(SegmentKinds, DetachUnmapsAndIsIdempotent) {
  auto made = Segment::create(name(), {.kind = GetParam(), .size = 64});
  ASSERT_TRUE(made) << made.error().message();
  ASSERT_TRUE(made->detach());
  EXPECT_FALSE(made->attached());
  EXPECT_TRUE(made->data().empty());
  EXPECT_TRUE(made->detach());
}

INSTANTIATE_TEST_SUITE_P(AllKinds, SegmentKinds,
                         ::testing::Values(SegmentKind::posix, SegmentKind::file,
                                           SegmentKind::memfd, SegmentKind::sysv),
                         ferry::test::kind_name);
INSTANTIATE_TEST_SUITE_P(Named, NamedSegmentKinds,
                         ::testing::Values(SegmentKind::posix, SegmentKind::file, SegmentKind::sysv),
                         ferry::test::kind_name);

TEST(SegmentNames, InvalidNamesAreRefusedWithTheReason) {
  for (const char* bad : {"", "a/b", "/orders", ".hidden", "white space", "semi;colon"}) {
    auto made = Segment::create(bad, {.size = 64});
    ASSERT_FALSE(made) << bad;
    EXPECT_EQ(made.error().code(), errc::invalid_argument) << bad;
    auto opened = Segment::open(bad);
    ASSERT_FALSE(opened) << bad;
    EXPECT_EQ(opened.error().code(), errc::invalid_argument) << bad;
  }
  EXPECT_EQ(Segment::create(std::string(201, 'a'), {.size = 64}).error().code(), errc::invalid_argument);
  EXPECT_EQ(Segment::create("dir/", {.kind = SegmentKind::file, .size = 64}).error().code(),
            errc::invalid_argument);
}

TEST(SegmentOptionsCheck, PersistenceMustSuitTheKind) {
  const std::string name = ferry::test::unique_name();
  auto posix_on_disk = Segment::create(name, {.size = 64, .persistence = Persistence::filesystem});
  ASSERT_FALSE(posix_on_disk);
  EXPECT_EQ(posix_on_disk.error().code(), errc::invalid_argument);
  EXPECT_NE(posix_on_disk.error().message().find("filesystem persistence"), std::string::npos);
  auto memfd_kernel =
      Segment::create(name, {.kind = SegmentKind::memfd, .size = 64, .persistence = Persistence::kernel});
  EXPECT_EQ(memfd_kernel.error().code(), errc::invalid_argument);
  EXPECT_EQ(Segment::create(name, {.size = 64, .mode = 04755}).error().code(), errc::invalid_argument);
  EXPECT_EQ(Segment::create(name, {.size = 64, .max_attachments = 0}).error().code(),
            errc::invalid_argument);
  EXPECT_FALSE(exists(shm_path(name)));
}

TEST(SegmentBadInput, SizeBeyondTheTmpfsIsNoSpaceAtCreateTime) {
  struct statvfs tmpfs {};
  ASSERT_EQ(::statvfs("/dev/shm", &tmpfs), 0);
  const std::size_t too_big = static_cast<std::size_t>(tmpfs.f_blocks) * tmpfs.f_frsize + (1u << 20);
  const std::string name = ferry::test::unique_name();
  auto made = Segment::create(name, {.size = too_big});
  ASSERT_FALSE(made);
  EXPECT_EQ(made.error().code(), errc::no_space) << made.error().message();
  EXPECT_FALSE(exists(shm_path(name))) << "nothing is left behind";
}

TEST(SegmentBadInput, SysvKeyPathMustExist) {
  auto made = Segment::create("/nonexistent/ferry/key", {.kind = SegmentKind::sysv, .size = 64});
  ASSERT_FALSE(made);
  EXPECT_EQ(made.error().code(), errc::not_found);
  EXPECT_EQ(Segment::create("/tmp", {.kind = SegmentKind::sysv, .size = 64, .sysv_project_id = 0})
                .error()
                .code(),
            errc::invalid_argument);
}

// Writes raw bytes where a posix segment named `name` would live.
void plant(const std::string& name, const std::string& bytes) {
  std::ofstream out(shm_path(name), std::ios::binary);
  out << bytes;
  out.close();
  ::chmod(shm_path(name).c_str(), 0600);
}

TEST(SegmentBadInput, GarbageHeaderIsCorrupt) {
  const std::string name = ferry::test::unique_name();
  plant(name, std::string(8192, '\x5a'));
  auto opened = Segment::open(name);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code(), errc::corrupt);
  EXPECT_NE(opened.error().message().find("not a ferry segment"), std::string::npos);
  ::unlink(shm_path(name).c_str());
}

TEST(SegmentBadInput, TruncatedObjectIsCorrupt) {
  const std::string name = ferry::test::unique_name();
  plant(name, "FERRYSEG");
  auto opened = Segment::open(name);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code(), errc::corrupt);
  plant(name, "");
  EXPECT_EQ(Segment::open(name).error().code(), errc::corrupt);
  ::unlink(shm_path(name).c_str());
}

// Creates a real segment, then lets `edit` scribble on its header.
ferry::error open_after_editing(const std::function<void(ferry::detail::SegmentHeader&)>& edit) {
  const std::string name = ferry::test::unique_name();
  {
    auto made = Segment::create(name, {.size = 4096});
    EXPECT_TRUE(made);
  }
  const int fd = ::open(shm_path(name).c_str(), O_RDWR);
  ferry::detail::SegmentHeader header;
  EXPECT_EQ(::pread(fd, &header, sizeof header, 0), static_cast<ssize_t>(sizeof header));
  edit(header);
  EXPECT_EQ(::pwrite(fd, &header, sizeof header, 0), static_cast<ssize_t>(sizeof header));
  ::close(fd);
  auto opened = Segment::open(name);
  (void)Segment::destroy(name);
  EXPECT_FALSE(opened);
  return opened ? ferry::error(errc::system, "unexpected success") : opened.error();
}

TEST(SegmentBadInput, HostileHeaderFieldsAreCaught) {
  using Header = ferry::detail::SegmentHeader;
  EXPECT_EQ(open_after_editing([](Header& h) { h.layout_version = 99; }).code(), errc::version_mismatch);
  EXPECT_EQ(open_after_editing([](Header& h) { h.total_size = 1ull << 40; }).code(), errc::corrupt);
  EXPECT_EQ(open_after_editing([](Header& h) { h.data_size += 1; }).code(), errc::corrupt);
  EXPECT_EQ(open_after_editing([](Header& h) { h.attach_capacity = 1u << 30; }).code(), errc::corrupt);
  EXPECT_EQ(open_after_editing([](Header& h) { h.attach_capacity = 0; }).code(), errc::corrupt);
  EXPECT_EQ(open_after_editing([](Header& h) { h.data_offset = 128; }).code(), errc::corrupt);
  EXPECT_EQ(open_after_editing([](Header& h) { h.kind = 9; }).code(), errc::corrupt);
  EXPECT_EQ(open_after_editing([](Header& h) { h.persistence = 3; }).code(), errc::corrupt);
  EXPECT_EQ(open_after_editing([](Header& h) { h.persistence = 0; }).code(), errc::corrupt);
  // A lifecycle word naming a dead "decider" is recovered from, not a hang.
  auto recovered = [] {
    const std::string name = ferry::test::unique_name();
    auto made = Segment::create(name, {.size = 4096});
    auto* header = reinterpret_cast<Header*>(made->data().data() - 4096);
    header->lifecycle.store(ferry::ProcessId::current().packed() ^ 0x77u);
    auto opened = Segment::open(name);
    (void)Segment::destroy(name);
    return opened.has_value();
  };
  EXPECT_TRUE(recovered());
}

TEST(SegmentBadInput, SymlinkIsNotFollowed) {
  ferry::test::TempDir dir;
  const std::string target = dir.file("target");
  auto made = Segment::create(target, {.kind = SegmentKind::file, .size = 64});
  ASSERT_TRUE(made);
  const std::string link = dir.file("link");
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  auto opened = Segment::open(link, {.kind = SegmentKind::file});
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code(), errc::invalid_argument);
  EXPECT_EQ(Segment::create(link, {.kind = SegmentKind::file, .size = 64}).error().code(),
            errc::already_exists);
}

TEST(SegmentBadInput, AttachingSomethingElseIsRefused) {
  EXPECT_EQ(Segment::attach(ferry::Fd()).error().code(), errc::invalid_argument);
  EXPECT_EQ(Segment::attach(ferry::Fd(::open("/dev/null", O_RDWR | O_CLOEXEC))).error().code(),
            errc::invalid_argument);
  ferry::test::TempDir dir;
  std::ofstream(dir.file("plain")) << std::string(200, 'x');
  EXPECT_EQ(Segment::attach(ferry::Fd(::open(dir.file("plain").c_str(), O_RDWR | O_CLOEXEC)))
                .error()
                .code(),
            errc::corrupt);
  EXPECT_EQ(Segment::open("x", {.kind = SegmentKind::memfd}).error().code(), errc::invalid_argument);
}

TEST(SegmentFile, SyncWritesTheBytesToTheFile) {
  ferry::test::TempDir dir;
  const std::string path = dir.file("durable.seg");
  auto made = Segment::create(path, {.kind = SegmentKind::file, .size = 4096});
  ASSERT_TRUE(made) << made.error().message();
  EXPECT_EQ(made->info().persistence, Persistence::filesystem);
  std::memcpy(made->data().data(), "on disk", 7);
  ASSERT_TRUE(made->sync());
  const std::string contents = ferry::test::read_file(path);
  ASSERT_EQ(contents.size(), 4096u + 4096u);
  EXPECT_EQ(contents.substr(4096, 7), "on disk");
}

TEST(SegmentFile, MissingDirectoryIsNotFound) {
  auto made = Segment::create("/nonexistent-dir-ferry/x.seg", {.kind = SegmentKind::file, .size = 64});
  ASSERT_FALSE(made);
  EXPECT_EQ(made.error().code(), errc::not_found) << made.error().message();
}

}  // namespace
