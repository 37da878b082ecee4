// Test support for the transports: text <-> bytes, and one connected
// writer/reader pair of every stream kind (pipe, FIFO, UNIX stream socket, TCP over IPv4 and IPv6), so
// one test body runs against each of them.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <ostream>
#include <string>

#include <gtest/gtest.h>

#include "ferry/transport/fifo.hpp"
#include "ferry/transport/pipe.hpp"
#include "ferry/transport/socket.hpp"
#include "ferry/transport/stream.hpp"
#include "ferry_test.hpp"

namespace ferry::test {

/// The bytes of a text, and a received frame as text.
inline std::span<const std::byte> bytes_of(std::string_view text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}
inline std::string text_of(std::span<const std::byte> bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

enum class StreamKind { pipe, fifo, unix_stream, tcp4, tcp6 };

inline std::string to_string(StreamKind kind) {
  switch (kind) {
    case StreamKind::pipe: return "pipe";
    case StreamKind::fifo: return "fifo";
    case StreamKind::unix_stream: return "unix";
    case StreamKind::tcp4: return "tcp4";
    case StreamKind::tcp6: return "tcp6";
  }
  return "unknown";
}

inline void PrintTo(StreamKind kind, std::ostream* out) { *out << to_string(kind); }

inline std::string stream_kind_name(const ::testing::TestParamInfo<StreamKind>& info) { return to_string(info.param); }

inline auto all_stream_kinds() {
  return ::testing::Values(StreamKind::pipe, StreamKind::fifo, StreamKind::unix_stream, StreamKind::tcp4,
                           StreamKind::tcp6);
}

/// Bytes go from `writer` to `reader`.
struct StreamPair {
  std::unique_ptr<TempDir> directory;  // holds the FIFO or the socket file
  ByteStream writer;
  ByteStream reader;
  /// Set when the kind cannot be made on this machine (no IPv6 loopback).
  std::string unavailable;
};

/// A listener of the socket kind (UNIX in `directory`, TCP on loopback, port 0).
inline result<Listener> listen_for(StreamKind kind, const TempDir& directory, const ListenOptions& options = {}) {
  switch (kind) {
    case StreamKind::tcp4: return TcpSocket::listen("127.0.0.1", 0, options);
    case StreamKind::tcp6: return TcpSocket::listen("::1", 0, options);
    default: return UnixSocket::listen(directory.file("socket"), options);
  }
}

/// Connects to a listener made by listen_for.
inline result<StreamSocket> connect_to(StreamKind kind, const Listener& listener,
                                       steady_clock::duration timeout = std::chrono::seconds(10)) {
  switch (kind) {
    case StreamKind::tcp4: return TcpSocket::connect_for("127.0.0.1", listener.port(), timeout);
    case StreamKind::tcp6: return TcpSocket::connect_for("::1", listener.port(), timeout);
    default: return UnixSocket::connect_for(listener.address().to_string(), timeout);
  }
}

inline StreamPair make_stream_pair(StreamKind kind) {
  StreamPair pair;
  pair.directory = std::make_unique<TempDir>();
  switch (kind) {
    case StreamKind::pipe: {
      auto pipe = Pipe::create();
      if (!pipe) ADD_FAILURE() << pipe.error().message();
      else {
        pair.writer = std::move(pipe->writer);
        pair.reader = std::move(pipe->reader);
      }
      return pair;
    }
    case StreamKind::fifo: {
      const std::string path = pair.directory->file("fifo");
      if (auto made = Fifo::create(path); !made) ADD_FAILURE() << made.error().message();
      auto reader = Fifo::try_open_reader(path);
      auto writer = Fifo::try_open_writer(path);
      if (!reader || !writer) ADD_FAILURE() << "fifo could not be opened";
      else {
        pair.reader = std::move(*reader);
        pair.writer = std::move(*writer);
      }
      return pair;
    }
    default: {
      auto listener = listen_for(kind, *pair.directory);
      if (!listener) {
        // Only IPv6 may be missing (a container without ::1); anything else is a failure.
        if (kind == StreamKind::tcp6) pair.unavailable = listener.error().message();
        else ADD_FAILURE() << listener.error().message();
        return pair;
      }
      auto client = connect_to(kind, *listener);
      auto server = listener->accept_for(std::chrono::seconds(10));
      if (!client || !server) ADD_FAILURE() << "could not connect over " << listener->name();
      else {
        pair.writer = std::move(*client);
        pair.reader = std::move(*server);
      }
      return pair;
    }
  }
}

}  // namespace ferry::test
