#include "ferry/os/error.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ferry {

std::string_view to_string(errc code) noexcept {
  switch (code) {
    case errc::invalid_argument: return "invalid argument";
    case errc::not_found: return "not found";
    case errc::already_exists: return "already exists";
    case errc::permission_denied: return "permission denied";
    case errc::timed_out: return "timed out";
    case errc::cancelled: return "cancelled";
    case errc::would_block: return "would block";
    case errc::full: return "full";
    case errc::empty: return "empty";
    case errc::peer_gone: return "peer gone";
    case errc::corrupt: return "corrupt";
    case errc::version_mismatch: return "version mismatch";
    case errc::size_mismatch: return "size mismatch";
    case errc::limit_reached: return "limit reached";
    case errc::no_space: return "no space";
    case errc::busy: return "busy";
    case errc::owner_died: return "owner died";
    case errc::not_recoverable: return "not recoverable";
    case errc::not_owner: return "not owner";
    case errc::unsupported: return "unsupported";
    case errc::system: return "system error";
  }
  return "unknown error";
}

errc errc_from_errno(int sys_errno) noexcept {
  switch (sys_errno) {
    case EINVAL:
    case ENAMETOOLONG:
    case EISDIR:
    case ENOTDIR:
    case EBADF: return errc::invalid_argument;
    case ENOENT: return errc::not_found;
    case EEXIST: return errc::already_exists;
    case EACCES:
    case EPERM: return errc::permission_denied;
    case ETIMEDOUT: return errc::timed_out;
    case ECANCELED: return errc::cancelled;
    case EAGAIN: return errc::would_block;
    case EPIPE:
    case ECONNRESET:
    case ESRCH: return errc::peer_gone;
    case ENOSPC:
    case ENOMEM: return errc::no_space;
    case EMFILE:
    case ENFILE:
    case E2BIG:
    case EFBIG: return errc::limit_reached;
    case EBUSY: return errc::busy;
    case EOWNERDEAD: return errc::owner_died;
    case ENOTRECOVERABLE: return errc::not_recoverable;
    case ENOSYS:
    case EOPNOTSUPP: return errc::unsupported;
    default: return errc::system;
  }
}

error::error(errc code, std::string_view object, std::string detail, int sys_errno)
    : error(code, std::make_shared<const std::string>(object), std::move(detail), sys_errno) {}

error::error(errc code, std::shared_ptr<const std::string> object, std::string detail,
             int sys_errno) noexcept
    : code_(code), sys_errno_(sys_errno), object_(std::move(object)), detail_(std::move(detail)) {}

error error::from_errno(int sys_errno, std::string_view object, std::string detail) {
  return error(errc_from_errno(sys_errno), object, std::move(detail), sys_errno);
}

std::string error::message() const {
  std::string text = object();
  if (!text.empty()) text += ": ";
  text += to_string(code_);
  if (!detail_.empty()) {
    text += ": ";
    text += detail_;
  }
  if (sys_errno_ != 0) {
    text += " (";
    if (const char* name = strerrorname_np(sys_errno_)) {
      text += name;
      text += ": ";
    }
    text += strerrordesc_np(sys_errno_) ? strerrordesc_np(sys_errno_) : "unknown errno";
    text += ')';
  }
  return text;
}

error& error::add_context(std::string_view context) {
  std::string detail(context);
  if (!detail_.empty()) {
    detail += ": ";
    detail += detail_;
  }
  detail_ = std::move(detail);
  return *this;
}

namespace detail {
void abort_with(std::string_view what, const error* e) noexcept {
  std::fprintf(stderr, "ferry: %.*s%s%s\n", static_cast<int>(what.size()), what.data(),
               e ? ": " : "", e ? e->message().c_str() : "");
  std::abort();
}
}  // namespace detail

}  // namespace ferry
