// Runs a command for an HTTP request: command metadata from the request
// (its correlation id, and its actor: the authenticated key's id, or
// "anonymous"), If-Match, and Idempotency-Key handling, so that route
// handlers only parse their input and decide.
//
//   http::Response Deposit(const http::Request& request) {
//     return runner.Run(request, [&](eventstore::EventStore& store,
//                                    const CommandContext& ctx)
//                                    -> absl::StatusOr<http::Response> {
//       ASSIGN_OR_RETURN(auto out, accounts.Execute(store, id, ctx.metadata,
//                                                   ctx.execute, decide));
//       return http::JsonResponse(200, ...);
//     });
//   }
//
// With an Idempotency-Key header the command runs through the
// IdempotencyStore: its response (status and body) is stored with its events
// and replayed byte for byte on retries; the replay carries the header
// `Idempotent-Replayed: true`. The request is identified by its method, its
// percent-decoded path, its If-Match version and its body: commands take no
// query parameters, so a query string is ignored. Responses with status >=
// 500 are not stored, nor are transient errors (IsTransientError: a version
// conflict, a timeout), whose retry may succeed. A replay appends nothing,
// so the stored events keep the actor and correlation id of the execution
// that appended them, whoever sends the retry.
//
// Thread-safety: thread-safe; the stores must outlive the runner.
#ifndef COMMANDS_HTTP_COMMAND_H_
#define COMMANDS_HTTP_COMMAND_H_

#include <cstdint>
#include <functional>
#include <optional>

#include "absl/status/statusor.h"
#include "commands/aggregate.h"
#include "commands/command_metadata.h"
#include "commands/idempotency.h"
#include "eventstore/event_store.h"
#include "framework/http/message.h"
#include "framework/metrics.h"

namespace cqrs::commands {

struct CommandContext {
  CommandMetadata metadata;
  ExecuteOptions execute;  // required_version from If-Match
};

// Parses If-Match: a version number, optionally in double quotes. Absent:
// nullopt. Anything else: kInvalidArgument (invalid_request).
absl::StatusOr<std::optional<int64_t>> ParseIfMatch(
    const http::Request& request);

class HttpCommandRunner {
 public:
  using Command = std::function<absl::StatusOr<http::Response>(
      eventstore::EventStore&, const CommandContext&)>;

  // `store` and `idempotency` must outlive the runner, and so must
  // `commands` when given: a counter family with the labels
  // {"command", "outcome"} (see CommandsCounter()).
  HttpCommandRunner(eventstore::EventStore* store,
                    IdempotencyStore* idempotency,
                    CounterFamily* commands = nullptr)
      : store_(store), idempotency_(idempotency), commands_(commands) {}

  // Runs `command`, named `name` in metrics ("deposit"); errors become
  // responses (http::ResponseFromStatus). Counts the outcome: "ok",
  // "replayed" (an Idempotency-Key retry), or the error code.
  http::Response Run(const http::Request& request, absl::string_view name,
                     const Command& command) const;

 private:
  http::Response Execute(const http::Request& request, const Command& command,
                         std::string* outcome) const;

  eventstore::EventStore* const store_;
  IdempotencyStore* const idempotency_;
  CounterFamily* const commands_;
};

// Registers cqrs_commands_total{command, outcome} in `registry`.
absl::StatusOr<CounterFamily*> CommandsCounter(MetricsRegistry& registry);

}  // namespace cqrs::commands

#endif  // COMMANDS_HTTP_COMMAND_H_
