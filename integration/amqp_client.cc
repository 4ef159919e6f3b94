#include "integration/amqp_client.h"

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "framework/status_macros.h"

namespace cqrs::integration::amqp {
namespace {

// Everything runs on one channel; see the header.
constexpr amqp_channel_t kChannel = 1;

amqp_bytes_t Bytes(absl::string_view s) {
  amqp_bytes_t b;
  b.len = s.size();
  b.bytes = const_cast<char*>(s.data());
  return b;
}

std::string ToString(amqp_bytes_t b) {
  return std::string(static_cast<const char*>(b.bytes), b.len);
}

timeval NonNegativeTimeval(absl::Duration d) {
  if (d < absl::ZeroDuration()) d = absl::ZeroDuration();
  return absl::ToTimeval(d);
}

std::string ErrnoText(int error) {
  return absl::AsciiStrToLower(std::strerror(error));
}

// A connected, non-blocking TCP socket (what librabbitmq's own sockets
// are), or why there is none: "connection refused", "no answer within 5s".
// Connecting here rather than in amqp_socket_open_noblock, which loses the
// connect error (errno is left at EINPROGRESS).
absl::StatusOr<int> ConnectTcp(const char* host, int port,
                               absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addresses = nullptr;
  std::string service = absl::StrCat(port);
  int rc = getaddrinfo(host, service.c_str(), &hints, &addresses);
  if (rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve the host: ", gai_strerror(rc)));
  }
  std::string why = "no address";
  int fd = -1;
  for (addrinfo* a = addresses; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                a->ai_protocol);
    if (fd < 0) {
      why = ErrnoText(errno);
      continue;
    }
    int error = 0;
    if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      error = errno;
      if (error == EINPROGRESS) {
        pollfd p{fd, POLLOUT, 0};
        int ms =
            static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
        int ready = poll(&p, 1, ms < 0 ? 0 : ms);
        socklen_t len = sizeof(error);
        if (ready == 0) {
          error = ETIMEDOUT;
        } else if (ready < 0) {
          error = errno;
        } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) {
          error = errno;
        }
      }
    }
    if (error != 0) {
      why = error == ETIMEDOUT ? absl::StrCat("no answer within ",
                                              absl::FormatDuration(timeout))
                               : ErrnoText(error);
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(addresses);
  if (fd < 0) return absl::UnavailableError(why);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

// AMQP reply codes to Status codes (the header lists them).
absl::StatusCode CodeForReply(uint16_t reply_code) {
  switch (reply_code) {
    case AMQP_NOT_FOUND:
      return absl::StatusCode::kNotFound;
    case AMQP_ACCESS_REFUSED:
    case AMQP_NOT_ALLOWED:
      return absl::StatusCode::kPermissionDenied;
    case AMQP_PRECONDITION_FAILED:
    case AMQP_RESOURCE_LOCKED:
      return absl::StatusCode::kFailedPrecondition;
    case AMQP_RESOURCE_ERROR:
      return absl::StatusCode::kResourceExhausted;
    case AMQP_CONNECTION_FORCED:
      return absl::StatusCode::kUnavailable;
    default:
      return absl::StatusCode::kInternal;
  }
}

std::string FieldToText(const amqp_field_value_t& v) {
  switch (v.kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
      return ToString(v.value.bytes);
    case AMQP_FIELD_KIND_BOOLEAN:
      return v.value.boolean ? "true" : "false";
    case AMQP_FIELD_KIND_I8:
      return absl::StrCat(v.value.i8);
    case AMQP_FIELD_KIND_U8:
      return absl::StrCat(v.value.u8);
    case AMQP_FIELD_KIND_I16:
      return absl::StrCat(v.value.i16);
    case AMQP_FIELD_KIND_U16:
      return absl::StrCat(v.value.u16);
    case AMQP_FIELD_KIND_I32:
      return absl::StrCat(v.value.i32);
    case AMQP_FIELD_KIND_U32:
      return absl::StrCat(v.value.u32);
    case AMQP_FIELD_KIND_I64:
      return absl::StrCat(v.value.i64);
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP:
      return absl::StrCat(v.value.u64);
    case AMQP_FIELD_KIND_F32:
      return absl::StrCat(v.value.f32);
    case AMQP_FIELD_KIND_F64:
      return absl::StrCat(v.value.f64);
    case AMQP_FIELD_KIND_TABLE:
      return "<table>";
    case AMQP_FIELD_KIND_ARRAY:
      return "<array>";
    case AMQP_FIELD_KIND_VOID:
      return "<void>";
    default:
      return "<other>";
  }
}

// Copies what the message carries in its properties.
template <typename Out>
void CopyProperties(const amqp_basic_properties_t& p, Out* out) {
  if (p._flags & AMQP_BASIC_MESSAGE_ID_FLAG) {
    out->message_id = ToString(p.message_id);
  }
  if (p._flags & AMQP_BASIC_CONTENT_TYPE_FLAG) {
    out->content_type = ToString(p.content_type);
  }
  if (p._flags & AMQP_BASIC_HEADERS_FLAG) {
    out->headers.reserve(p.headers.num_entries);
    for (int i = 0; i < p.headers.num_entries; ++i) {
      const amqp_table_entry_t& e = p.headers.entries[i];
      out->headers.emplace_back(ToString(e.key), FieldToText(e.value));
    }
  }
}

}  // namespace

// Reused by Publish so that headers cost no allocation per message.
struct Connection::PublishScratch {
  std::vector<amqp_table_entry_t> headers;
};

absl::StatusOr<std::unique_ptr<Connection>> Connection::Open(
    const std::string& url, ConnectionOptions options) {
  // amqp_parse_url points into (and writes to) the buffer it parses.
  std::string buffer = url;
  amqp_connection_info info;
  amqp_default_connection_info(&info);
  if (amqp_parse_url(buffer.data(), &info) != AMQP_STATUS_OK) {
    return absl::InvalidArgumentError(
        absl::StrCat("not an AMQP URL (amqp://user:password@host:port/vhost)",
                     ": '", url, "'"));
  }
  if (info.ssl) {
    return absl::InvalidArgumentError(
        absl::StrCat("amqps:// is not supported: '", url, "'"));
  }
  const std::string endpoint = absl::StrCat(info.host, ":", info.port);
  const std::string vhost =
      info.vhost == nullptr || *info.vhost == '\0' ? "/" : info.vhost;

  amqp_connection_state_t conn = amqp_new_connection();
  if (conn == nullptr) return absl::ResourceExhaustedError("out of memory");
  // From here on `connection` owns `conn`: its destructor tears it down
  // (without a polite close until the channel is open).
  std::unique_ptr<Connection> connection(new Connection(conn, endpoint, vhost));
  connection->broken_ = absl::UnavailableError("not connected");

  amqp_socket_t* socket = amqp_tcp_socket_new(conn);
  if (socket == nullptr) return absl::ResourceExhaustedError("out of memory");
  absl::StatusOr<int> fd =
      ConnectTcp(info.host, info.port, options.connect_timeout);
  if (!fd.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach the AMQP broker at ", endpoint, ": ",
                     fd.status().message()));
  }
  amqp_tcp_socket_set_sockfd(socket, *fd);  // owned by `conn` from here
  timeval connect_timeout = NonNegativeTimeval(options.connect_timeout);
  amqp_set_handshake_timeout(conn, &connect_timeout);
  timeval rpc_timeout = NonNegativeTimeval(options.rpc_timeout);
  amqp_set_rpc_timeout(conn, &rpc_timeout);

  amqp_table_entry_t property;
  property.key = amqp_cstring_bytes("connection_name");
  property.value.kind = AMQP_FIELD_KIND_UTF8;
  property.value.value.bytes = Bytes(options.connection_name);
  amqp_table_t properties;
  properties.num_entries = options.connection_name.empty() ? 0 : 1;
  properties.entries = &property;
  amqp_rpc_reply_t reply = amqp_login_with_properties(
      conn, vhost.c_str(), /*channel_max=*/0, AMQP_DEFAULT_FRAME_SIZE,
      options.heartbeat_seconds, &properties, AMQP_SASL_METHOD_PLAIN, info.user,
      info.password);
  if (reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
      reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
    auto* close = static_cast<amqp_connection_close_t*>(reply.reply.decoded);
    std::string text = ToString(close->reply_text);
    amqp_connection_close_ok_t close_ok;
    amqp_send_method(conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &close_ok);
    absl::StatusCode code = CodeForReply(close->reply_code);
    if (close->reply_code == AMQP_ACCESS_REFUSED) {
      code = absl::StatusCode::kUnauthenticated;
    }
    return absl::Status(code,
                        absl::StatusCode::kInternal == code
                            ? absl::StrCat("the AMQP broker at ", endpoint,
                                           " refused the connection: ", text)
                            : absl::StrCat("the AMQP broker at ", endpoint,
                                           " refused the login of '", info.user,
                                           "' to vhost '", vhost, "': ", text));
  }
  if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
    // RabbitMQ answers bad credentials by closing the socket during the
    // handshake (it sends connection.close only to clients that announce
    // authentication_failure_close, which rabbitmq-c 0.11 does not).
    std::string why = reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION
                          ? std::string(amqp_error_string2(reply.library_error))
                          : "unexpected reply";
    if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        reply.library_error == AMQP_STATUS_CONNECTION_CLOSED) {
      return absl::UnauthenticatedError(absl::StrCat(
          "the AMQP broker at ", endpoint,
          " closed the connection during the login of '", info.user,
          "' to vhost '", vhost,
          "' (wrong user or password, or no access to the vhost)"));
    }
    return absl::UnavailableError(absl::StrCat(
        "cannot log in to the AMQP broker at ", endpoint, ": ", why));
  }
  connection->broken_ = absl::OkStatus();
  RETURN_IF_ERROR(connection->OpenChannel());
  return connection;
}

Connection::Connection(amqp_connection_state_t_* conn, std::string endpoint,
                       std::string vhost)
    : conn_(conn),
      endpoint_(std::move(endpoint)),
      vhost_(std::move(vhost)),
      scratch_(std::make_unique<PublishScratch>()) {}

Connection::~Connection() {
  if (broken_.ok()) {
    // Closing should not hang a shutdown on a broker that went quiet.
    timeval close_timeout = NonNegativeTimeval(absl::Seconds(2));
    amqp_set_rpc_timeout(conn_, &close_timeout);
    amqp_channel_close(conn_, kChannel, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn_, AMQP_REPLY_SUCCESS);
  }
  amqp_destroy_connection(conn_);
}

absl::Status Connection::Broken(absl::string_view what, int amqp_status) {
  if (broken_.ok()) {
    broken_ = absl::UnavailableError(
        absl::StrCat("lost the AMQP broker at ", endpoint_, " (", what,
                     "): ", amqp_error_string2(amqp_status)));
  }
  return broken_;
}

absl::Status Connection::OpenChannel() {
  amqp_channel_open(conn_, kChannel);
  RETURN_IF_ERROR(CheckReply("channel.open"));
  if (confirms_) {
    amqp_confirm_select(conn_, kChannel);
    RETURN_IF_ERROR(CheckReply("confirm.select"));
  }
  if (prefetch_ > 0) {
    amqp_basic_qos(conn_, kChannel, 0, static_cast<uint16_t>(prefetch_), 0);
    RETURN_IF_ERROR(CheckReply("basic.qos"));
  }
  for (const auto& [queue, tag] : consumers_) {
    amqp_basic_consume(conn_, kChannel, Bytes(queue), Bytes(tag),
                       /*no_local=*/0, /*no_ack=*/0, /*exclusive=*/0,
                       amqp_empty_table);
    RETURN_IF_ERROR(CheckReply("basic.consume"));
  }
  return absl::OkStatus();
}

absl::Status Connection::CheckReply(absl::string_view what) {
  amqp_rpc_reply_t reply = amqp_get_rpc_reply(conn_);
  switch (reply.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return absl::OkStatus();
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      return Broken(what, reply.library_error);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      break;
    default:
      return Broken(what, AMQP_STATUS_UNEXPECTED_STATE);
  }
  if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    auto* close = static_cast<amqp_channel_close_t*>(reply.reply.decoded);
    return OnChannelClose(close->reply_code, ToString(close->reply_text), what);
  }
  if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
    auto* close = static_cast<amqp_connection_close_t*>(reply.reply.decoded);
    amqp_connection_close_ok_t close_ok;
    amqp_send_method(conn_, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &close_ok);
    broken_ = absl::UnavailableError(absl::StrCat(
        "the AMQP broker at ", endpoint_, " closed the connection (", what,
        "): ", ToString(close->reply_text)));
    return broken_;
  }
  return Broken(what, AMQP_STATUS_WRONG_METHOD);
}

absl::Status Connection::OnChannelClose(uint16_t reply_code,
                                        absl::string_view text,
                                        absl::string_view what) {
  absl::Status error(CodeForReply(reply_code), absl::StrCat(what, ": ", text));
  amqp_channel_close_ok_t close_ok;
  int rc = amqp_send_method(conn_, kChannel, AMQP_CHANNEL_CLOSE_OK_METHOD,
                            &close_ok);
  if (rc != AMQP_STATUS_OK) return Broken("channel.close-ok", rc);
  // Outstanding confirms died with the channel (see the header).
  ResetConfirms();
  deliveries_.clear();
  amqp_maybe_release_buffers_on_channel(conn_, kChannel);
  absl::Status reopened = OpenChannel();
  return reopened.ok() ? error : reopened;
}

void Connection::ResetConfirms() {
  next_seq_ = 1;
  first_unconfirmed_ = 1;
  confirmed_.clear();
  pending_ = ConfirmResult();
}

absl::Status Connection::DeclareExchange(const std::string& name,
                                         const std::string& type,
                                         bool durable) {
  RETURN_IF_ERROR(broken_);
  amqp_exchange_declare(conn_, kChannel, Bytes(name), Bytes(type),
                        /*passive=*/0, durable, /*auto_delete=*/0,
                        /*internal=*/0, amqp_empty_table);
  return CheckReply(absl::StrCat("declaring exchange '", name, "'"));
}

absl::Status Connection::CheckExchange(const std::string& name) {
  RETURN_IF_ERROR(broken_);
  amqp_exchange_declare(conn_, kChannel, Bytes(name), amqp_cstring_bytes(""),
                        /*passive=*/1, 0, 0, 0, amqp_empty_table);
  absl::Status status =
      CheckReply(absl::StrCat("checking exchange '", name, "'"));
  if (absl::IsNotFound(status)) {
    return absl::NotFoundError(absl::StrCat(
        "exchange '", name, "' does not exist in vhost '", vhost_, "'"));
  }
  return status;
}

absl::Status Connection::DeclareQueue(const std::string& name,
                                      const QueueOptions& options) {
  RETURN_IF_ERROR(broken_);
  amqp_table_entry_t entries[3];
  int n = 0;
  if (!options.dead_letter_exchange.empty()) {
    entries[n].key = amqp_cstring_bytes("x-dead-letter-exchange");
    entries[n].value.kind = AMQP_FIELD_KIND_UTF8;
    entries[n].value.value.bytes = Bytes(options.dead_letter_exchange);
    ++n;
  }
  if (options.quorum) {
    entries[n].key = amqp_cstring_bytes("x-queue-type");
    entries[n].value.kind = AMQP_FIELD_KIND_UTF8;
    entries[n].value.value.bytes = amqp_cstring_bytes("quorum");
    ++n;
  } else if (options.classic_version != 0) {
    entries[n].key = amqp_cstring_bytes("x-queue-version");
    entries[n].value.kind = AMQP_FIELD_KIND_I32;
    entries[n].value.value.i32 = options.classic_version;
    ++n;
  }
  amqp_table_t arguments;
  arguments.num_entries = n;
  arguments.entries = entries;
  amqp_queue_declare(conn_, kChannel, Bytes(name), /*passive=*/0,
                     options.durable || options.quorum, /*exclusive=*/0,
                     /*auto_delete=*/0, arguments);
  return CheckReply(absl::StrCat("declaring queue '", name, "'"));
}

absl::Status Connection::BindQueue(const std::string& queue,
                                   const std::string& exchange,
                                   const std::string& routing_key) {
  RETURN_IF_ERROR(broken_);
  amqp_queue_bind(conn_, kChannel, Bytes(queue), Bytes(exchange),
                  Bytes(routing_key), amqp_empty_table);
  return CheckReply(
      absl::StrCat("binding queue '", queue, "' to exchange '", exchange, "'"));
}

absl::Status Connection::PurgeQueue(const std::string& name) {
  RETURN_IF_ERROR(broken_);
  amqp_queue_purge(conn_, kChannel, Bytes(name));
  return CheckReply(absl::StrCat("purging queue '", name, "'"));
}

absl::Status Connection::EnableConfirms() {
  RETURN_IF_ERROR(broken_);
  if (confirms_) return absl::OkStatus();
  amqp_confirm_select(conn_, kChannel);
  RETURN_IF_ERROR(CheckReply("confirm.select"));
  confirms_ = true;
  ResetConfirms();
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Connection::Publish(const Message& message) {
  RETURN_IF_ERROR(broken_);
  amqp_basic_properties_t props;
  props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
  props.delivery_mode = message.persistent ? 2 : 1;
  if (!message.content_type.empty()) {
    props._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
    props.content_type = Bytes(message.content_type);
  }
  if (!message.message_id.empty()) {
    props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
    props.message_id = Bytes(message.message_id);
  }
  if (!message.headers.empty()) {
    std::vector<amqp_table_entry_t>& entries = scratch_->headers;
    entries.resize(message.headers.size());
    for (size_t i = 0; i < message.headers.size(); ++i) {
      entries[i].key = Bytes(message.headers[i].first);
      entries[i].value.kind = AMQP_FIELD_KIND_UTF8;
      entries[i].value.value.bytes = Bytes(message.headers[i].second);
    }
    props._flags |= AMQP_BASIC_HEADERS_FLAG;
    props.headers.num_entries = static_cast<int>(entries.size());
    props.headers.entries = entries.data();
  }
  int rc = amqp_basic_publish(conn_, kChannel, Bytes(message.exchange),
                              Bytes(message.routing_key), message.mandatory,
                              /*immediate=*/0, &props, Bytes(message.body));
  if (rc != AMQP_STATUS_OK) return Broken("basic.publish", rc);
  if (!confirms_) return uint64_t{0};
  confirmed_.push_back(false);
  return next_seq_++;
}

void Connection::OnConfirm(uint64_t tag, bool multiple, bool ack) {
  // A tag outside the outstanding range is from a channel since reopened.
  if (tag < first_unconfirmed_ || tag >= next_seq_) return;
  for (uint64_t seq = multiple ? first_unconfirmed_ : tag; seq <= tag; ++seq) {
    bool& done = confirmed_[seq - first_unconfirmed_];
    if (done) continue;
    done = true;
    if (ack) {
      ++pending_.acked;
    } else {
      pending_.nacked.push_back(seq);
    }
  }
  while (!confirmed_.empty() && confirmed_.front()) {
    confirmed_.pop_front();
    ++first_unconfirmed_;
  }
}

absl::Status Connection::ReadContent(Message* message_out,
                                     Delivery* delivery_out) {
  amqp_message_t content;
  amqp_rpc_reply_t reply = amqp_read_message(conn_, kChannel, &content, 0);
  if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
    return Broken("reading a message",
                  reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION
                      ? reply.library_error
                      : AMQP_STATUS_UNEXPECTED_STATE);
  }
  if (message_out != nullptr) {
    CopyProperties(content.properties, message_out);
    message_out->body = ToString(content.body);
  } else {
    CopyProperties(content.properties, delivery_out);
    delivery_out->body = ToString(content.body);
  }
  amqp_destroy_message(&content);
  return absl::OkStatus();
}

absl::Status Connection::PollOnce(absl::Time deadline, bool* timed_out) {
  *timed_out = false;
  amqp_maybe_release_buffers(conn_);
  amqp_frame_t frame;
  timeval wait = NonNegativeTimeval(deadline - absl::Now());
  int rc = amqp_simple_wait_frame_noblock(conn_, &frame, &wait);
  if (rc == AMQP_STATUS_TIMEOUT) {
    *timed_out = true;
    return absl::OkStatus();
  }
  if (rc != AMQP_STATUS_OK) return Broken("waiting for the broker", rc);
  if (frame.frame_type != AMQP_FRAME_METHOD) return absl::OkStatus();
  const amqp_method_t& method = frame.payload.method;
  if (frame.channel == 0) {
    if (method.id == AMQP_CONNECTION_CLOSE_METHOD) {
      auto* close = static_cast<amqp_connection_close_t*>(method.decoded);
      amqp_connection_close_ok_t close_ok;
      amqp_send_method(conn_, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &close_ok);
      broken_ = absl::UnavailableError(absl::StrCat(
          "the AMQP broker at ", endpoint_,
          " closed the connection: ", ToString(close->reply_text)));
      return broken_;
    }
    return absl::OkStatus();  // connection.blocked/unblocked: nothing to do
  }
  if (frame.channel != kChannel) return absl::OkStatus();
  switch (method.id) {
    case AMQP_BASIC_ACK_METHOD: {
      auto* ack = static_cast<amqp_basic_ack_t*>(method.decoded);
      OnConfirm(ack->delivery_tag, ack->multiple, /*ack=*/true);
      return absl::OkStatus();
    }
    case AMQP_BASIC_NACK_METHOD: {
      auto* nack = static_cast<amqp_basic_nack_t*>(method.decoded);
      OnConfirm(nack->delivery_tag, nack->multiple, /*ack=*/false);
      return absl::OkStatus();
    }
    case AMQP_BASIC_RETURN_METHOD: {
      auto* ret = static_cast<amqp_basic_return_t*>(method.decoded);
      Message returned;
      returned.exchange = ToString(ret->exchange);
      returned.routing_key = ToString(ret->routing_key);
      returned.mandatory = true;
      RETURN_IF_ERROR(ReadContent(&returned, nullptr));
      pending_.returned.push_back(std::move(returned));
      return absl::OkStatus();
    }
    case AMQP_BASIC_DELIVER_METHOD: {
      auto* deliver = static_cast<amqp_basic_deliver_t*>(method.decoded);
      Delivery delivery;
      delivery.delivery_tag = deliver->delivery_tag;
      delivery.redelivered = deliver->redelivered;
      delivery.exchange = ToString(deliver->exchange);
      delivery.routing_key = ToString(deliver->routing_key);
      RETURN_IF_ERROR(ReadContent(nullptr, &delivery));
      deliveries_.push_back(std::move(delivery));
      return absl::OkStatus();
    }
    case AMQP_BASIC_CANCEL_METHOD: {
      // The broker cancelled a consumer (its queue was deleted).
      auto* cancel = static_cast<amqp_basic_cancel_t*>(method.decoded);
      std::string tag = ToString(cancel->consumer_tag);
      for (auto it = consumers_.begin(); it != consumers_.end(); ++it) {
        if (it->second == tag) {
          consumers_.erase(it);
          break;
        }
      }
      return absl::OkStatus();
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
      auto* close = static_cast<amqp_channel_close_t*>(method.decoded);
      return OnChannelClose(close->reply_code, ToString(close->reply_text),
                            "the broker closed the channel");
    }
    default:
      return absl::OkStatus();
  }
}

absl::StatusOr<ConfirmResult> Connection::WaitForConfirms(
    absl::Duration timeout) {
  return WaitForConfirmsThrough(LastPublished(), timeout);
}

absl::StatusOr<ConfirmResult> Connection::WaitForConfirmsThrough(
    uint64_t seq, absl::Duration timeout) {
  RETURN_IF_ERROR(broken_);
  if (!confirms_) {
    return absl::FailedPreconditionError(
        "WaitForConfirms without EnableConfirms");
  }
  const absl::Time deadline = absl::Now() + timeout;
  while (first_unconfirmed_ <= seq && first_unconfirmed_ < next_seq_) {
    bool timed_out = false;
    RETURN_IF_ERROR(PollOnce(deadline, &timed_out));
    if (timed_out) {
      return absl::DeadlineExceededError(
          absl::StrCat(Unconfirmed(),
                       " published messages not confirmed by the broker "
                       "within ",
                       absl::FormatDuration(timeout)));
    }
  }
  return std::exchange(pending_, ConfirmResult());
}

absl::Status Connection::Qos(int prefetch) {
  RETURN_IF_ERROR(broken_);
  if (prefetch < 0 || prefetch > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefetch must be in 0..65535, not ", prefetch));
  }
  amqp_basic_qos(conn_, kChannel, 0, static_cast<uint16_t>(prefetch), 0);
  RETURN_IF_ERROR(CheckReply("basic.qos"));
  prefetch_ = prefetch;
  return absl::OkStatus();
}

absl::Status Connection::Consume(const std::string& queue,
                                 const std::string& consumer_tag) {
  RETURN_IF_ERROR(broken_);
  amqp_basic_consume_ok_t* ok = amqp_basic_consume(
      conn_, kChannel, Bytes(queue), Bytes(consumer_tag), /*no_local=*/0,
      /*no_ack=*/0, /*exclusive=*/0, amqp_empty_table);
  RETURN_IF_ERROR(CheckReply(absl::StrCat("consuming queue '", queue, "'")));
  consumers_.emplace_back(queue, ToString(ok->consumer_tag));
  return absl::OkStatus();
}

absl::StatusOr<std::optional<Delivery>> Connection::Next(
    absl::Duration timeout) {
  RETURN_IF_ERROR(broken_);
  const absl::Time deadline = absl::Now() + timeout;
  while (deliveries_.empty()) {
    bool timed_out = false;
    RETURN_IF_ERROR(PollOnce(deadline, &timed_out));
    if (timed_out) return std::optional<Delivery>();
  }
  std::optional<Delivery> next(std::move(deliveries_.front()));
  deliveries_.pop_front();
  return next;
}

absl::Status Connection::Ack(uint64_t delivery_tag) {
  RETURN_IF_ERROR(broken_);
  int rc = amqp_basic_ack(conn_, kChannel, delivery_tag, /*multiple=*/0);
  if (rc != AMQP_STATUS_OK) return Broken("basic.ack", rc);
  return absl::OkStatus();
}

absl::Status Connection::Reject(uint64_t delivery_tag, bool requeue) {
  RETURN_IF_ERROR(broken_);
  int rc = amqp_basic_reject(conn_, kChannel, delivery_tag, requeue);
  if (rc != AMQP_STATUS_OK) return Broken("basic.reject", rc);
  return absl::OkStatus();
}

}  // namespace cqrs::integration::amqp
