// Test support for rpc tests: an endpoint of each transport at a fresh
// address, and the methods the tests serve. Loopback only.
#pragma once

#include <atomic>
#include <chrono>
#include <thread>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/patterns/rpc.hpp"
#include "ferry_test.hpp"

namespace ferry::test {

inline const std::vector<std::string>& rpc_schemes() {
  static const std::vector<std::string> schemes{"shm", "unix", "tcp"};
  return schemes;
}

/// A fresh endpoint of one scheme; a shm:// one is destroyed at the end.
class RpcEndpoint {
 public:
  explicit RpcEndpoint(std::string scheme) : scheme_(std::move(scheme)), directory_(0755) {
    if (scheme_ == "shm") text_ = "shm://" + unique_name("rpc");
    if (scheme_ == "unix") text_ = "unix://" + directory_.file("socket");
    if (scheme_ == "tcp") text_ = "tcp://127.0.0.1:0";
  }
  ~RpcEndpoint() {
    if (scheme_ == "shm") (void)rpc::Server::destroy(text_);
  }
  RpcEndpoint(const RpcEndpoint&) = delete;
  RpcEndpoint& operator=(const RpcEndpoint&) = delete;

  /// Where servers listen (a tcp port 0 until a server bound one).
  [[nodiscard]] const std::string& text() const { return text_; }
  [[nodiscard]] const std::string& scheme() const { return scheme_; }
  /// A listener for servers to share (unix, tcp), made before they fork.
  result<Listener> listen() {
    auto endpoint = Endpoint::parse(text_);
    if (!endpoint) return std::move(endpoint).error();
    auto listener = scheme_ == "tcp" ? TcpSocket::listen(endpoint->name, 0)
                                     : UnixSocket::listen(endpoint->name, {.mode = 0666});
    if (listener && scheme_ == "tcp") text_ = "tcp://127.0.0.1:" + std::to_string(listener->port());
    return listener;
  }
  /// After a server bound port 0: its endpoint for clients.
  void bound(const rpc::Server& server) { text_ = server.endpoint().to_string(); }

 private:
  std::string scheme_;
  TempDir directory_;
  std::string text_;
};

/// The payload of the load tests: who called, and which call it was.
struct Tagged {
  std::uint32_t caller;
  std::uint32_t server;  // filled in by the server
  std::uint64_t sequence;
};

inline std::span<const std::byte> text_bytes(std::string_view text) { return std::as_bytes(std::span(text)); }
inline std::string text_of(const rpc::Bytes& bytes) { return {reinterpret_cast<const char*>(bytes.data()), bytes.size()}; }

/// Waits (up to a minute, the tests' watchdog) until `condition` holds; false if it never did.
template <class Condition>
bool eventually(Condition condition) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

/// A method that answers with its request.
inline rpc::Handler echo() {
  return [](const rpc::CallContext&, std::span<const std::byte> request) -> result<rpc::Bytes> {
    return rpc::Bytes(request.begin(), request.end());
  };
}

}  // namespace ferry::test
