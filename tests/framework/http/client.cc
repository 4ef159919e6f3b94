#include "tests/framework/http/client.h"

#include <cstdint>
#include <limits>
#include <utility>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace cqrs {
namespace http_test {
namespace {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = boost::asio::ip::tcp;

std::string ToString(beast::string_view text) {
  return std::string(text.data(), text.size());
}

absl::Status StatusFromError(beast::error_code ec, absl::string_view what) {
  const std::string message = absl::StrCat(what, ": ", ec.message());
  if (ec == beast::error::timeout) return absl::DeadlineExceededError(message);
  if (ec == net::error::eof || ec == bhttp::error::end_of_stream ||
      ec == net::error::connection_reset || ec == net::error::broken_pipe ||
      ec == bhttp::error::partial_message ||
      ec == net::error::connection_refused) {
    return absl::UnavailableError(message);
  }
  return absl::InternalError(message);
}

}  // namespace

absl::optional<std::string> ClientResponse::Header(
    absl::string_view name) const {
  for (const auto& header : headers) {
    if (absl::EqualsIgnoreCase(header.first, name)) return header.second;
  }
  return absl::nullopt;
}

struct TestClient::Impl {
  explicit Impl(absl::Duration op_timeout)
      : stream(ioc), timeout(absl::ToChronoNanoseconds(op_timeout)) {}

  // Runs one asynchronous operation on the private io_context until it
  // completes; tcp_stream's expiry bounds it.
  template <typename Start>
  beast::error_code Run(Start start) {
    beast::error_code result;
    stream.expires_after(timeout);
    start([&result](beast::error_code ec, std::size_t = 0) { result = ec; });
    ioc.restart();
    ioc.run();
    return result;
  }

  net::io_context ioc;
  beast::tcp_stream stream;
  beast::flat_buffer buffer;
  const std::chrono::nanoseconds timeout;
  // The response to a HEAD request has no body, whatever it announces.
  bool expect_head_response = false;
  http::HeaderList default_headers;
  // The response OpenStream() is reading.
  absl::optional<bhttp::response_parser<bhttp::string_body>> stream_parser;
};

TestClient::TestClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

void TestClient::SetDefaultHeaders(http::HeaderList headers) {
  impl_->default_headers = std::move(headers);
}

TestClient::~TestClient() {
  beast::error_code ec;
  impl_->stream.socket().shutdown(tcp::socket::shutdown_both, ec);
  impl_->stream.socket().close(ec);
}

absl::StatusOr<std::unique_ptr<TestClient>> TestClient::Connect(
    int port, absl::Duration timeout) {
  return ConnectWith(port, timeout, /*receive_buffer=*/0);
}

absl::StatusOr<std::unique_ptr<TestClient>> TestClient::ConnectSmallWindow(
    int port) {
  return ConnectWith(port, absl::Seconds(10), /*receive_buffer=*/1);
}

absl::StatusOr<std::unique_ptr<TestClient>> TestClient::ConnectWith(
    int port, absl::Duration timeout, int receive_buffer) {
  auto impl = std::make_unique<Impl>(timeout);
  const tcp::endpoint endpoint(net::ip::make_address("127.0.0.1"),
                               static_cast<unsigned short>(port));
  Impl* raw = impl.get();
  if (receive_buffer > 0) {
    beast::error_code ec;
    raw->stream.socket().open(tcp::v4(), ec);
    if (!ec) {
      raw->stream.socket().set_option(
          net::socket_base::receive_buffer_size(receive_buffer), ec);
    }
    if (ec) return StatusFromError(ec, "socket");
  }
  beast::error_code ec = raw->Run([raw, &endpoint](auto handler) {
    raw->stream.async_connect(endpoint,
                              [handler](beast::error_code connect_ec) mutable {
                                handler(connect_ec);
                              });
  });
  if (ec) return StatusFromError(ec, "connect");
  return std::unique_ptr<TestClient>(new TestClient(std::move(impl)));
}

absl::StatusOr<ClientResponse> TestClient::Send(
    absl::string_view method, absl::string_view target, absl::string_view body,
    const http::HeaderList& headers) {
  bhttp::request<bhttp::string_body> request;
  request.method_string(beast::string_view(method.data(), method.size()));
  request.target(beast::string_view(target.data(), target.size()));
  request.version(11);
  request.set(bhttp::field::host, "127.0.0.1");
  for (const auto& header : headers)
    request.insert(header.first, header.second);
  for (const auto& header : impl_->default_headers) {
    if (request.find(header.first) == request.end()) {
      request.insert(header.first, header.second);
    }
  }
  request.body() = std::string(body);
  if (!body.empty() || method == "POST" || method == "PUT") {
    request.content_length(body.size());
  }
  Impl* raw = impl_.get();
  beast::error_code ec = raw->Run([raw, &request](auto handler) {
    bhttp::async_write(raw->stream, request, handler);
  });
  if (ec) return StatusFromError(ec, "write");
  raw->expect_head_response = method == "HEAD";
  absl::StatusOr<ClientResponse> response = ReadResponse();
  raw->expect_head_response = false;
  return response;
}

absl::StatusOr<ClientResponse> TestClient::OpenStream(
    absl::string_view target, const http::HeaderList& headers) {
  bhttp::request<bhttp::empty_body> request;
  request.method(bhttp::verb::get);
  request.target(beast::string_view(target.data(), target.size()));
  request.version(11);
  request.set(bhttp::field::host, "127.0.0.1");
  for (const auto& header : headers) {
    request.insert(header.first, header.second);
  }
  for (const auto& header : impl_->default_headers) {
    if (request.find(header.first) == request.end()) {
      request.insert(header.first, header.second);
    }
  }
  Impl* raw = impl_.get();
  beast::error_code ec = raw->Run([raw, &request](auto handler) {
    bhttp::async_write(raw->stream, request, handler);
  });
  if (ec) return StatusFromError(ec, "write");
  raw->stream_parser.emplace();
  // No limit, but not boost::none: Boost 1.74's parser compares a
  // Content-Length with the optional limit itself, and every length is
  // greater than an empty optional, so an answer that is not streamed (a
  // 503 refusal with its JSON body) failed as "body limit exceeded".
  raw->stream_parser->body_limit(std::numeric_limits<std::uint64_t>::max());
  ec = raw->Run([raw](auto handler) {
    bhttp::async_read_header(raw->stream, raw->buffer, *raw->stream_parser,
                             handler);
  });
  if (ec) return StatusFromError(ec, "read");
  const auto& message = raw->stream_parser->get();
  ClientResponse response;
  response.status = static_cast<int>(message.result_int());
  for (const auto& field : message) {
    response.headers.emplace_back(ToString(field.name_string()),
                                  ToString(field.value()));
  }
  response.keep_alive = message.keep_alive();
  return response;
}

absl::StatusOr<std::string> TestClient::ReadStream(absl::Duration timeout) {
  Impl* raw = impl_.get();
  if (!raw->stream_parser.has_value()) {
    return absl::FailedPreconditionError("no stream is open");
  }
  auto& parser = *raw->stream_parser;
  const auto deadline =
      std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout);
  while (parser.get().body().empty()) {
    if (parser.is_done()) return absl::OutOfRangeError("the stream ended");
    beast::error_code result;
    raw->stream.expires_at(deadline);
    bhttp::async_read_some(
        raw->stream, raw->buffer, parser,
        [&](beast::error_code ec, std::size_t) { result = ec; });
    raw->ioc.restart();
    raw->ioc.run();
    if (result == bhttp::error::end_of_stream && parser.is_done()) {
      break;
    }
    if (result) return StatusFromError(result, "read stream");
  }
  if (parser.get().body().empty()) {
    return absl::OutOfRangeError("the stream ended");
  }
  return std::exchange(parser.get().body(), std::string());
}

void TestClient::GrowReceiveBuffer() {
  beast::error_code ignored;
  impl_->stream.socket().set_option(
      net::socket_base::receive_buffer_size(1 << 20), ignored);
}

absl::Status TestClient::WriteRaw(absl::string_view bytes) {
  Impl* raw = impl_.get();
  beast::error_code ec = raw->Run([raw, bytes](auto handler) {
    net::async_write(raw->stream, net::buffer(bytes.data(), bytes.size()),
                     handler);
  });
  if (ec) return StatusFromError(ec, "write");
  return absl::OkStatus();
}

absl::StatusOr<ClientResponse> TestClient::ReadResponse() {
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(std::uint64_t{64} << 20);
  Impl* raw = impl_.get();
  parser.skip(raw->expect_head_response);
  beast::error_code ec = raw->Run([raw, &parser](auto handler) {
    bhttp::async_read(raw->stream, raw->buffer, parser, handler);
  });
  if (ec) return StatusFromError(ec, "read");
  bhttp::response<bhttp::string_body> message = parser.release();
  ClientResponse response;
  response.status = static_cast<int>(message.result_int());
  for (const auto& field : message) {
    response.headers.emplace_back(ToString(field.name_string()),
                                  ToString(field.value()));
  }
  response.body = std::move(message.body());
  response.keep_alive = message.keep_alive();
  return response;
}

absl::Status TestClient::WaitForClose(absl::Duration timeout) {
  Impl* raw = impl_.get();
  if (raw->buffer.size() > 0) {
    return absl::FailedPreconditionError("unread data is buffered");
  }
  char scratch[512];
  std::size_t received = 0;
  beast::error_code result;
  raw->stream.expires_after(absl::ToChronoNanoseconds(timeout));
  raw->stream.async_read_some(net::buffer(scratch),
                              [&](beast::error_code ec, std::size_t n) {
                                result = ec;
                                received = n;
                              });
  raw->ioc.restart();
  raw->ioc.run();
  if (result == beast::error::timeout) {
    return absl::DeadlineExceededError("the server kept the connection open");
  }
  if (!result) {
    return absl::FailedPreconditionError(absl::StrCat(
        "received data instead of a close: ", std::string(scratch, received)));
  }
  if (result == net::error::eof || result == net::error::connection_reset) {
    return absl::OkStatus();
  }
  return StatusFromError(result, "wait for close");
}

}  // namespace http_test
}  // namespace cqrs
