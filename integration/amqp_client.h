// A synchronous AMQP 0-9-1 client for RabbitMQ over librabbitmq
// (rabbitmq-c 0.11): declare the topology, publish with publisher confirms,
// consume with manual acknowledgements.
//
//   ASSIGN_OR_RETURN(auto conn, amqp::Connection::Open(url));
//   RETURN_IF_ERROR(conn->EnableConfirms());
//   ASSIGN_OR_RETURN(uint64_t seq, conn->Publish(message));
//   ASSIGN_OR_RETURN(auto confirms, conn->WaitForConfirms(absl::Seconds(5)));
//
// One Connection is one TCP connection with one channel: everything runs on
// the calling thread, nothing in the background. Acks, returns and
// deliveries that arrive while the caller waits for something else are kept
// until WaitForConfirms or Next reads them. Heartbeats are sent and checked
// only inside calls: a connection left idle (no call) for longer than twice
// `heartbeat_seconds` is closed by the broker, and the next call reports
// kUnavailable.
//
// A channel error (the broker closes the channel: a missing exchange, an
// unknown delivery tag) is returned by the call that sees it, mapped from
// the AMQP reply code (404 kNotFound, 403/530 kPermissionDenied,
// 406/405 kFailedPrecondition, others kInternal), and the channel is
// reopened at once with the same settings (confirm mode, prefetch,
// consumers): the Connection stays usable. Messages published but not yet
// confirmed when that happens are lost to the caller (publish them again;
// sequence numbers restart at 1), and unacknowledged deliveries are
// redelivered by the broker.
//
// A connection error (the broker closed the connection, restarted, or the
// socket broke) makes this call and every later one return kUnavailable:
// open a new Connection.
//
// Thread-safety: none. A Connection is one thread's at a time; move it
// between threads only with external synchronization.
#ifndef INTEGRATION_AMQP_CLIENT_H_
#define INTEGRATION_AMQP_CLIENT_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

// librabbitmq's connection handle, kept out of this header.
struct amqp_connection_state_t_;

namespace cqrs::integration::amqp {

struct ConnectionOptions {
  // Covers the TCP connect and the AMQP handshake (login).
  absl::Duration connect_timeout = absl::Seconds(5);
  // Negotiated down to the broker's value when it asks for less; 0 disables.
  int heartbeat_seconds = 30;
  // Client property connection_name (shown by the broker's tools).
  std::string connection_name;
  // How long a synchronous request (declare, bind, qos, ...) may wait for
  // the broker's reply; after it the connection is considered broken.
  absl::Duration rpc_timeout = absl::Seconds(30);
};

struct Message {
  std::string exchange;
  std::string routing_key;
  std::string body;
  std::string message_id;
  std::string content_type;  // e.g. application/json
  // Application properties: an AMQP table of long strings.
  std::vector<std::pair<std::string, std::string>> headers;
  bool persistent = true;  // delivery_mode 2
  // The broker returns the message (ConfirmResult::returned) when no queue
  // is bound for its routing key.
  bool mandatory = false;
};

struct ConfirmResult {
  // Messages the broker confirmed (acked), returned ones included.
  uint64_t acked = 0;
  // Publish sequence numbers the broker nacked (it could not take them).
  std::vector<uint64_t> nacked;
  // Unroutable mandatory messages the broker returned: exchange,
  // routing_key, message_id, content_type, headers and body as published.
  // The broker acks them too (counted in `acked`): a message here was not
  // delivered anywhere.
  std::vector<Message> returned;
};

struct Delivery {
  uint64_t delivery_tag = 0;
  bool redelivered = false;
  std::string exchange;
  std::string routing_key;
  std::string message_id;
  std::string content_type;
  std::string body;
  // String-valued headers as they are; numbers, booleans and timestamps as
  // decimal text; nested tables, arrays and other kinds as "<table>",
  // "<array>", "<void>", "<bytes>"...
  std::vector<std::pair<std::string, std::string>> headers;
};

class Connection {
 public:
  // Connects to amqp://user:pass@host:port/vhost (amqp_parse_url; an empty
  // vhost, as in "amqp://host:5672/", means "/").
  // Returns kInvalidArgument for a malformed URL; kUnavailable ("cannot
  // reach the AMQP broker at host:port: connection refused") when the
  // broker cannot be reached within options.connect_timeout or the
  // handshake fails; kUnauthenticated when the broker refuses the
  // credentials; kPermissionDenied when the user may not use the vhost.
  // kUnavailable is worth retrying later; the others need a configuration
  // change.
  static absl::StatusOr<std::unique_ptr<Connection>> Open(
      const std::string& url, ConnectionOptions options = {});

  // Closes the channel and the connection politely (waiting at most 2 s
  // for the broker) unless the connection is already broken.
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Declares (creates if missing) an exchange, not auto-deleted. A
  // declaration that contradicts an existing exchange is kFailedPrecondition
  // (406 PRECONDITION_FAILED).
  absl::Status DeclareExchange(const std::string& name,
                               const std::string& type = "topic",
                               bool durable = true);

  // Checks that the exchange exists (passive declare). kNotFound "exchange
  // 'x' does not exist in vhost '/'" when it does not.
  absl::Status CheckExchange(const std::string& name);

  struct QueueOptions {
    bool durable = true;
    // x-dead-letter-exchange: where Reject(requeue=false) sends messages.
    std::string dead_letter_exchange;
    // x-queue-type quorum (replicated, always durable) instead of classic.
    bool quorum = false;
    // x-queue-version of a classic queue: 2, the storage RabbitMQ 3.10
    // added and later versions make the default, takes persistent messages
    // with confirms markedly faster here than version 1 (bench/results.md,
    // issue 17); 0 leaves it to the broker (policy or default). Ignored for
    // quorum queues.
    int classic_version = 2;
  };
  // Declares (creates if missing) a queue, neither exclusive nor
  // auto-deleted. kFailedPrecondition when it exists with other arguments.
  absl::Status DeclareQueue(const std::string& name,
                            const QueueOptions& options);
  // kNotFound when the queue or the exchange does not exist.
  absl::Status BindQueue(const std::string& queue, const std::string& exchange,
                         const std::string& routing_key);
  // Deletes the queue's ready messages. kNotFound when it does not exist.
  absl::Status PurgeQueue(const std::string& name);

  // Puts the channel in confirm mode (confirm.select): from now on the
  // broker acks or nacks every publish, and Publish returns sequence
  // numbers 1, 2, ... Idempotent.
  absl::Status EnableConfirms();

  // Sends one message; returns its publish sequence number (1, 2, ... since
  // EnableConfirms; 0 without confirms). Does not wait for the broker: a
  // missing exchange closes the channel, which the next WaitForConfirms (or
  // other call) reports. kUnavailable when the connection broke.
  // Allocates nothing per message once `headers` sizes have been seen.
  absl::StatusOr<uint64_t> Publish(const Message& message);

  // Blocks until every message published so far is acked or nacked, and
  // returns what was confirmed and returned since the previous call.
  // kFailedPrecondition without EnableConfirms; kDeadlineExceeded after
  // `timeout` with messages still unconfirmed (the result is kept for the
  // next call; waiting again is fine); kUnavailable when the connection
  // broke (unconfirmed messages may or may not have reached the broker:
  // publish them again on a new connection); a channel error's code when
  // the broker closed the channel (see the top of this file).
  absl::StatusOr<ConfirmResult> WaitForConfirms(absl::Duration timeout);
  // The same, but only until every message up to sequence number `seq`
  // (a value Publish returned) is acked or nacked, so that a publisher can
  // keep later messages in flight meanwhile. The result holds everything
  // confirmed or returned since the previous call, which may include later
  // messages.
  absl::StatusOr<ConfirmResult> WaitForConfirmsThrough(uint64_t seq,
                                                       absl::Duration timeout);

  // The sequence number of the last message published (0 before the first
  // since EnableConfirms or a channel error).
  uint64_t LastPublished() const { return next_seq_ - 1; }
  // Every message up to this sequence number is acked or nacked.
  uint64_t ConfirmedThrough() const { return first_unconfirmed_ - 1; }

  // Unconfirmed messages so far (published, neither acked nor nacked).
  uint64_t Unconfirmed() const { return next_seq_ - first_unconfirmed_; }

  // At most `prefetch` unacknowledged deliveries at a time (basic.qos,
  // per consumer); 0 means no limit.
  absl::Status Qos(int prefetch);
  // Starts consuming `queue` with manual acknowledgements; an empty
  // consumer_tag lets the broker choose one. kNotFound when the queue does
  // not exist.
  absl::Status Consume(const std::string& queue,
                       const std::string& consumer_tag = "");
  // The next delivery, or nullopt after `timeout` without one (0 polls).
  // kUnavailable when the connection broke: unacknowledged deliveries go
  // back to their queue, flagged redelivered.
  absl::StatusOr<std::optional<Delivery>> Next(absl::Duration timeout);
  // Acknowledges one delivery. An unknown tag closes the channel (reported
  // by a later call as kFailedPrecondition).
  absl::Status Ack(uint64_t delivery_tag);
  // Rejects one delivery: requeue=true puts it back in its queue;
  // requeue=false drops it, or dead-letters it when the queue has a
  // dead-letter exchange (with an x-death header).
  absl::Status Reject(uint64_t delivery_tag, bool requeue);

 private:
  struct PublishScratch;

  Connection(amqp_connection_state_t_* conn, std::string endpoint,
             std::string vhost);

  // Checks the reply of the last synchronous request; on a channel or
  // connection close, handles it as described at the top of this file.
  absl::Status CheckReply(absl::string_view what);
  // The status for a failed library call: marks the connection broken.
  absl::Status Broken(absl::string_view what, int amqp_status);
  // Reads and handles one frame, waiting until `deadline` at most; sets
  // *timed_out when none came.
  absl::Status PollOnce(absl::Time deadline, bool* timed_out);
  // Answers the broker's channel.close, reopens the channel, restores its
  // settings, and returns the error it carried.
  absl::Status OnChannelClose(uint16_t reply_code, absl::string_view text,
                              absl::string_view what);
  absl::Status OpenChannel();
  absl::Status ReadContent(Message* message_out, Delivery* delivery_out);
  void OnConfirm(uint64_t tag, bool multiple, bool ack);
  void ResetConfirms();

  // Constant after construction.
  amqp_connection_state_t_* const conn_;
  const std::string endpoint_;  // host:port, for messages
  const std::string vhost_;

  // Set once the connection is unusable; every call then returns it.
  absl::Status broken_;
  // Channel settings to restore after a channel error.
  bool confirms_ = false;
  int prefetch_ = 0;
  std::vector<std::pair<std::string, std::string>> consumers_;  // queue, tag
  // Publisher confirms: sequence numbers [first_unconfirmed_, next_seq_)
  // are outstanding; confirmed_[i] says whether first_unconfirmed_ + i is
  // confirmed already (acks may come out of order).
  uint64_t next_seq_ = 1;
  uint64_t first_unconfirmed_ = 1;
  std::deque<bool> confirmed_;
  ConfirmResult pending_;
  // Deliveries read while waiting for something else.
  std::deque<Delivery> deliveries_;
  std::unique_ptr<PublishScratch> scratch_;
};

}  // namespace cqrs::integration::amqp

#endif  // INTEGRATION_AMQP_CLIENT_H_
