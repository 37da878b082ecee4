// ferry's error model: one error type, one result type, used by every layer.
//
// Every fallible call returns `ferry::result<T>`: either a value or a
// `ferry::error` that carries
//   - a code (`ferry::errc`) a program can switch on,
//   - the errno the OS reported, when an OS call failed (0 otherwise),
//   - the name of the object the call was about ("segment 'orders'"),
//   - an optional detail that explains the reason ("owned by uid 1000").
// ferry never throws for an expected failure and never fails silently.
// Calling `value()` on a result that holds an error, or `error()` on one that
// holds a value, is a precondition violation: it aborts with the message.
//
// Thread-safety: error and result are plain values. A result that succeeded
// costs no allocation; the error of a failed one is allocated when it fails.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace ferry {

/// What went wrong, independent of the mechanism that reported it.
enum class errc : std::uint8_t {
  invalid_argument = 1,  ///< a name, size or option the call cannot accept
  not_found,             ///< no object of that name
  already_exists,        ///< creating a name that is taken (fail closed)
  permission_denied,     ///< the mode or the owner forbids it
  timed_out,             ///< a timed call reached its deadline
  cancelled,             ///< the caller gave the operation up (an rpc call it cancelled)
  would_block,           ///< a try_ call could not proceed without waiting
  full,                  ///< no room for the message or the attachment
  empty,                 ///< nothing to receive
  peer_gone,             ///< the process on the other side died or left
  corrupt,               ///< shared memory fails its checks (garbage or a hostile peer)
  version_mismatch,      ///< made by an incompatible ferry layout version
  size_mismatch,         ///< exists with a size other than the one asked for
  limit_reached,         ///< a configured or kernel limit is exhausted
  no_space,              ///< the file system or tmpfs has no room left
  busy,                  ///< held by someone else right now
  owner_died,            ///< a robust lock's owner died holding it
  not_recoverable,       ///< protected state was left inconsistent for good
  not_owner,             ///< only the owner may do that
  unsupported,           ///< not available on this kernel or for this kind
  system,                ///< any other OS failure; see sys_errno(); stays last (rpc replies check codes against it)
};

/// Short lowercase text for a code, e.g. "permission denied".
std::string_view to_string(errc code) noexcept;

/// The one error type of ferry. The object's name is shared between copies.
class error {
 public:
  error(errc code, std::string_view object, std::string detail = {}, int sys_errno = 0);
  /// Same, sharing an object's name without copying it (for hot paths).
  error(errc code, std::shared_ptr<const std::string> object, std::string detail = {},
        int sys_errno = 0) noexcept;

  /// Maps an errno value to the matching code (EACCES -> permission_denied, ...).
  static error from_errno(int sys_errno, std::string_view object, std::string detail = {});

  [[nodiscard]] errc code() const noexcept { return code_; }
  [[nodiscard]] int sys_errno() const noexcept { return sys_errno_; }
  [[nodiscard]] const std::string& object() const noexcept { return *object_; }
  [[nodiscard]] const std::string& detail() const noexcept { return detail_; }

  /// "segment 'orders': permission denied: owned by uid 1000 (EACCES: Permission denied)"
  [[nodiscard]] std::string message() const;

  /// Prepends context as the error travels up: "while attaching: <old detail>".
  error& add_context(std::string_view context);

  friend bool operator==(const error& e, errc code) noexcept { return e.code_ == code; }

 private:
  errc code_;
  int sys_errno_;
  std::shared_ptr<const std::string> object_;
  std::string detail_;
};

/// Maps an errno value to a code; unknown values become errc::system.
errc errc_from_errno(int sys_errno) noexcept;

namespace detail {
[[noreturn]] void abort_with(std::string_view what, const error* e) noexcept;

// An error kept out of line: a result on the success path carries only a
// null pointer (or its value and a tag), so hot paths return cheaply; the
// allocation happens only when something fails. Copies are deep.
class ErrorBox {
 public:
  ErrorBox() noexcept = default;
  explicit ErrorBox(error e) : error_(std::make_unique<error>(std::move(e))) {}
  ErrorBox(const ErrorBox& other) : error_(other.error_ ? std::make_unique<error>(*other.error_) : nullptr) {}
  ErrorBox(ErrorBox&&) noexcept = default;
  ErrorBox& operator=(const ErrorBox& other) {
    if (this != &other) error_ = other.error_ ? std::make_unique<error>(*other.error_) : nullptr;
    return *this;
  }
  ErrorBox& operator=(ErrorBox&&) noexcept = default;

  explicit operator bool() const noexcept { return error_ != nullptr; }
  error& get() const noexcept { return *error_; }

 private:
  std::unique_ptr<error> error_;
};
}  // namespace detail

/// A value of type T or a ferry::error. [[nodiscard]]: ignoring a failure is a bug.
template <class T>
class [[nodiscard]] result {
  static_assert(!std::is_same_v<std::remove_cv_t<T>, ferry::error>, "result<error> is meaningless");

 public:
  using value_type = T;

  template <class U = T>
    requires std::is_constructible_v<T, U&&> && (!std::is_same_v<std::remove_cvref_t<U>, ferry::error>) &&
             (!std::is_same_v<std::remove_cvref_t<U>, result>)
  result(U&& value) : state_(std::in_place_index<0>, std::forward<U>(value)) {}
  result(ferry::error e) : state_(std::in_place_index<1>, std::move(e)) {}

  [[nodiscard]] bool has_value() const noexcept { return state_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { return check(), std::get<0>(state_); }
  const T& value() const& { return check(), std::get<0>(state_); }
  T&& value() && { return check(), std::get<0>(std::move(state_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  template <class U>
  T value_or(U&& fallback) const& {
    return has_value() ? std::get<0>(state_) : static_cast<T>(std::forward<U>(fallback));
  }

  [[nodiscard]] const ferry::error& error() const& {
    if (has_value()) detail::abort_with("result::error() called on a value", nullptr);
    return std::get<1>(state_).get();
  }
  [[nodiscard]] ferry::error&& error() && {
    if (has_value()) detail::abort_with("result::error() called on a value", nullptr);
    return std::move(std::get<1>(state_).get());
  }

 private:
  void check() const {
    if (!has_value()) detail::abort_with("result::value() called on an error", &std::get<1>(state_).get());
  }
  std::variant<T, detail::ErrorBox> state_;
};

/// Success or a ferry::error. On success it is one null pointer.
template <>
class [[nodiscard]] result<void> {
 public:
  using value_type = void;

  result() noexcept = default;
  result(ferry::error e) : error_(std::move(e)) {}

  [[nodiscard]] bool has_value() const noexcept { return !error_; }
  explicit operator bool() const noexcept { return has_value(); }
  void value() const {
    if (error_) detail::abort_with("result::value() called on an error", &error_.get());
  }

  [[nodiscard]] const ferry::error& error() const& {
    if (!error_) detail::abort_with("result::error() called on a value", nullptr);
    return error_.get();
  }
  [[nodiscard]] ferry::error&& error() && {
    if (!error_) detail::abort_with("result::error() called on a value", nullptr);
    return std::move(error_.get());
  }

 private:
  detail::ErrorBox error_;
};

}  // namespace ferry
