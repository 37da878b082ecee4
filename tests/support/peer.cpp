// ferry_test_peer: a separate program the process tests exec, so that a
// segment is really opened by a process that shares nothing with its creator.
//
//   ferry_test_peer read KIND NAME TEXT     open NAME, exit 0 if its data starts with TEXT
//   ferry_test_peer read-fd FD TEXT         attach the memfd at descriptor FD, same check
//   ferry_test_peer reply KIND NAME TEXT    open NAME, write TEXT at offset 4096 of its data
//   ferry_test_peer hold KIND NAME          open NAME, print "ready", sleep until killed
//   ferry_test_peer create-hold KIND NAME PERSISTENCE SIZE
//                                           create NAME, print "ready", sleep until killed
//   ferry_test_peer lock-hold NAME          open the Named<Mutex> NAME, lock it, print "ready",
//                                           sleep until killed (dies holding it)
// Exit codes: 0 ok, 2 usage, 3 open/create failed (message on stderr), 4 data mismatch.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "ferry/ferry.hpp"

namespace {

std::optional<ferry::SegmentKind> parse_kind(std::string_view text) {
  if (text == "posix") return ferry::SegmentKind::posix;
  if (text == "file") return ferry::SegmentKind::file;
  if (text == "memfd") return ferry::SegmentKind::memfd;
  if (text == "sysv") return ferry::SegmentKind::sysv;
  return std::nullopt;
}

int check_text(const ferry::Segment& segment, std::string_view text) {
  const auto bytes = segment.data();
  if (bytes.size() < text.size() || std::memcmp(bytes.data(), text.data(), text.size()) != 0) {
    std::fprintf(stderr, "peer: data does not start with '%.*s'\n", static_cast<int>(text.size()),
                 text.data());
    return 4;
  }
  return 0;
}

int failed(const ferry::error& e) {
  std::fprintf(stderr, "peer: %s\n", e.message().c_str());
  return 3;
}

[[noreturn]] void hold() {
  std::printf("ready\n");
  std::fflush(stdout);
  for (;;) ::pause();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const std::string_view command = argv[1];
  if (command == "read-fd" && argc == 4) {
    auto segment = ferry::Segment::attach(ferry::Fd(std::atoi(argv[2])));
    if (!segment) return failed(segment.error());
    return check_text(*segment, argv[3]);
  }
  if (command == "lock-hold" && argc == 3) {
    auto mutex = ferry::Named<ferry::Mutex>::open(argv[2]);
    if (!mutex) return failed(mutex.error());
    if (auto locked = (*mutex)->lock(); !locked) return failed(locked.error());
    hold();
  }
  const auto kind = parse_kind(argv[2]);
  if (!kind || argc < 4) return 2;
  const ferry::OpenOptions options{.kind = *kind};
  if (command == "read" && argc == 5) {
    auto segment = ferry::Segment::open(argv[3], options);
    if (!segment) return failed(segment.error());
    return check_text(*segment, argv[4]);
  }
  if (command == "reply" && argc == 5) {
    auto segment = ferry::Segment::open(argv[3], options);
    if (!segment) return failed(segment.error());
    const std::string_view text = argv[4];
    if (segment->size() < 4096 + text.size()) return 4;
    std::memcpy(segment->data().data() + 4096, text.data(), text.size());
    return 0;
  }
  if (command == "hold" && argc == 4) {
    auto segment = ferry::Segment::open(argv[3], options);
    if (!segment) return failed(segment.error());
    hold();
  }
  if (command == "create-hold" && argc == 6) {
    const std::string_view persistence = argv[4];
    ferry::SegmentOptions create{.kind = *kind, .size = std::strtoull(argv[5], nullptr, 10)};
    create.persistence = persistence == "process" ? ferry::Persistence::process
                         : persistence == "kernel" ? ferry::Persistence::kernel
                                                   : ferry::Persistence::filesystem;
    auto segment = ferry::Segment::create(argv[3], create);
    if (!segment) return failed(segment.error());
    hold();
  }
  return 2;
}
