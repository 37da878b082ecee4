// Named<T>: a sync primitive in a segment of its own, found by name.
//
//   auto lock = ferry::Named<ferry::Mutex>::create("orders-lock");   // process A
//   auto same = ferry::Named<ferry::Mutex>::open("orders-lock");     // process B
//   same->lock(); ... same->unlock();
//
// Creation and opening follow the Segment rules (O_EXCL, explicit mode,
// owner check, version/size/type checks, persistence). The primitive is
// constructed before the name appears, so no process can open a
// half-built one. `size` and `object_type` in the options are set by Named.
//
// A Named object whose primitive is held by this process when it is
// destroyed keeps its mapping until the process exits: unmapping a robust
// mutex one still holds would leave it locked forever (glibc bug 14485).
#pragma once

#include <new>
#include <string_view>
#include <utility>

#include "ferry/os/error.hpp"
#include "ferry/os/segment.hpp"

namespace ferry {

template <class T>
class Named {
 public:
  /// Creates `name` holding T(args..., label = name).
  template <class... Args>
  static result<Named> create(std::string_view name, SegmentOptions options, Args&&... args) {
    options.size = sizeof(T);
    options.object_type = T::kObjectType;
    options.initialize = [&](std::span<std::byte> data) {
      new (data.data()) T(std::forward<Args>(args)..., name);
    };
    auto segment = Segment::create(name, options);
    if (!segment) return std::move(segment).error();
    return Named(std::move(*segment));
  }
  static result<Named> create(std::string_view name) { return create(name, SegmentOptions{}); }

  static result<Named> open(std::string_view name, OpenOptions options = {}) {
    options.size = sizeof(T);
    options.object_type = T::kObjectType;
    auto segment = Segment::open(name, options);
    if (!segment) return std::move(segment).error();
    return Named(std::move(*segment));
  }

  static result<void> destroy(std::string_view name, SegmentKind kind = SegmentKind::posix,
                              int sysv_project_id = 1) {
    return Segment::destroy(name, kind, sysv_project_id);
  }

  Named(Named&&) noexcept = default;
  Named& operator=(Named&&) noexcept = default;
  ~Named() {
    if constexpr (requires(const T& t) { t.held_by_current_process(); }) {
      if (segment_.attached() && get().held_by_current_process()) segment_.keep_mapped_until_exit();
    }
  }

  [[nodiscard]] T& get() const noexcept { return *reinterpret_cast<T*>(segment_.data().data()); }
  T& operator*() const noexcept { return get(); }
  T* operator->() const noexcept { return &get(); }
  [[nodiscard]] const Segment& segment() const noexcept { return segment_; }

 private:
  explicit Named(Segment segment) noexcept : segment_(std::move(segment)) {}
  Segment segment_;
};

}  // namespace ferry
