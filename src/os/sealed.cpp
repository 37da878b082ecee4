#include "ferry/os/sealed.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <utility>

namespace ferry {
namespace {

constexpr int kRequiredSeals = F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK;

std::string seal_names(int seals) {
  std::string names;
  for (const auto& [bit, name] : {std::pair{F_SEAL_WRITE, "write"}, std::pair{F_SEAL_GROW, "grow"},
                                  std::pair{F_SEAL_SHRINK, "shrink"}, std::pair{F_SEAL_SEAL, "seal"}}) {
    if (!(seals & bit)) continue;
    if (!names.empty()) names += '|';
    names += name;
  }
  return names.empty() ? "none" : names;
}

}  // namespace

result<SealedPayload> SealedPayload::create(std::size_t size, std::string_view name) {
  const std::string description = "sealed payload '" + std::string(name) + "'";
  if (size == 0) return error(errc::invalid_argument, description, "size 0");
  Fd fd(::memfd_create(std::string(name).c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) return error::from_errno(errno, description, "memfd_create");
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return error::from_errno(errno, description, "ftruncate");
  void* mapping = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (mapping == MAP_FAILED) return error::from_errno(errno, description, "mmap");
  return SealedPayload(std::move(fd), size, mapping, false);
}

result<SealedPayload> SealedPayload::adopt(Fd descriptor) {
  const std::string description = "sealed payload (descriptor " + std::to_string(descriptor.get()) + ")";
  const int seals = ::fcntl(descriptor.get(), F_GET_SEALS);
  if (seals < 0) {
    return error(errc::invalid_argument, description, "not a sealable memfd: F_GET_SEALS failed", errno);
  }
  if ((seals & kRequiredSeals) != kRequiredSeals) {
    return error(errc::invalid_argument, description,
                 "refused: sealed against " + seal_names(seals) +
                     ", not against write|grow|shrink (its sender could change or shrink it under the reader)");
  }
  struct stat facts {};
  if (::fstat(descriptor.get(), &facts) != 0) return error::from_errno(errno, description, "fstat");
  const auto size = static_cast<std::size_t>(facts.st_size);
  if (size == 0) return SealedPayload(std::move(descriptor), 0, nullptr, true);
  void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, descriptor.get(), 0);
  if (mapping == MAP_FAILED) return error::from_errno(errno, description, "mmap");
  return SealedPayload(std::move(descriptor), size, mapping, true);
}

SealedPayload::SealedPayload(SealedPayload&& other) noexcept
    : fd_(std::move(other.fd_)),
      size_(std::exchange(other.size_, 0)),
      mapping_(std::exchange(other.mapping_, nullptr)),
      sealed_(other.sealed_) {}

SealedPayload& SealedPayload::operator=(SealedPayload&& other) noexcept {
  if (this != &other) {
    unmap();
    fd_ = std::move(other.fd_);
    size_ = std::exchange(other.size_, 0);
    mapping_ = std::exchange(other.mapping_, nullptr);
    sealed_ = other.sealed_;
  }
  return *this;
}

SealedPayload::~SealedPayload() { unmap(); }

void SealedPayload::unmap() noexcept {
  if (mapping_ != nullptr) ::munmap(mapping_, size_);
  mapping_ = nullptr;
}

std::span<std::byte> SealedPayload::data() const noexcept {
  if (sealed_ || mapping_ == nullptr) return {};
  return {static_cast<std::byte*>(mapping_), size_};
}

std::span<const std::byte> SealedPayload::bytes() const noexcept {
  if (mapping_ == nullptr) return {};
  return {static_cast<const std::byte*>(mapping_), size_};
}

result<void> SealedPayload::seal() {
  if (sealed_) return {};
  const std::string description = "sealed payload (descriptor " + std::to_string(fd_.get()) + ")";
  unmap();
  if (::fcntl(fd_.get(), F_ADD_SEALS, kRequiredSeals | F_SEAL_SEAL) != 0) {
    const int failure = errno;
    // Still writable, as before the call.
    if (void* mapping = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0); mapping != MAP_FAILED) {
      mapping_ = mapping;
    }
    return error::from_errno(failure, description, "F_ADD_SEALS");
  }
  void* mapping = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd_.get(), 0);
  if (mapping == MAP_FAILED) return error::from_errno(errno, description, "mmap");
  mapping_ = mapping;
  sealed_ = true;
  return {};
}

}  // namespace ferry
