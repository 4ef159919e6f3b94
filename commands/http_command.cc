#include "commands/http_command.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "framework/http/status_mapping.h"
#include "framework/pg_pool.h"

namespace cqrs::commands {

absl::StatusOr<std::optional<int64_t>> ParseIfMatch(
    const http::Request& request) {
  absl::optional<absl::string_view> header = request.Header("If-Match");
  if (!header.has_value()) return std::nullopt;
  absl::string_view value = *header;
  if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
    value = value.substr(1, value.size() - 2);
  }
  int64_t version = 0;
  bool digits = !value.empty() && value.size() <= 18;
  for (char c : value) digits = digits && c >= '0' && c <= '9';
  if (!digits || !absl::SimpleAtoi(value, &version)) {
    return http::WithErrorCode(
        absl::InvalidArgumentError(
            "If-Match must be a version number, optionally quoted"),
        "invalid_request");
  }
  return version;
}

absl::StatusOr<CounterFamily*> CommandsCounter(MetricsRegistry& registry) {
  return registry.AddCounter(
      "cqrs_commands_total",
      "Commands run, by command and outcome (ok, replayed or the error code).",
      {"command", "outcome"});
}

http::Response HttpCommandRunner::Run(const http::Request& request,
                                      absl::string_view name,
                                      const Command& command) const {
  std::string outcome;
  http::Response response = Execute(request, command, &outcome);
  if (commands_ != nullptr) {
    commands_->WithLabels({std::string(name), outcome}).Increment();
  }
  return response;
}

http::Response HttpCommandRunner::Execute(const http::Request& request,
                                          const Command& command,
                                          std::string* outcome) const {
  // The outcome of a response made here: "ok" or its error code.
  auto finish = [outcome](absl::StatusOr<http::Response> result) {
    if (!result.ok()) {
      *outcome = http::ErrorCodeOf(result.status());
      http::Response response = http::ResponseFromStatus(result.status());
      if (outcome->empty()) *outcome = absl::StrCat(response.status);
      return response;
    }
    *outcome = result->status < 400 ? "ok" : absl::StrCat(result->status);
    return *std::move(result);
  };
  CommandContext context;
  context.metadata =
      CommandMetadata::ForCommand(request.correlation_id(), request.actor());
  absl::StatusOr<std::optional<int64_t>> if_match = ParseIfMatch(request);
  if (!if_match.ok()) return finish(if_match.status());
  context.execute.required_version = *if_match;

  absl::optional<absl::string_view> key = request.Header("Idempotency-Key");
  if (!key.has_value()) return finish(command(*store_, context));

  if (absl::Status valid = ValidateIdempotencyKey(*key); !valid.ok()) {
    return finish(http::WithErrorCode(valid, "invalid_request"));
  }
  // The request's identity: everything that changes what it does, in a
  // form that does not depend on how it was spelled. The decoded path (so
  // "/accounts/%61%31" is "/accounts/a1"), the expected version, the body.
  // Commands take no query parameters, so the query is not part of it.
  // Length-prefixed, so that no two different requests share one.
  const std::string expected =
      if_match->has_value() ? absl::StrCat(**if_match) : std::string();
  const std::string identity =
      absl::StrCat(request.method().size(), ":", request.method(),
                   request.path().size(), ":", request.path(), expected.size(),
                   ":", expected, request.body().size(), ":", request.body());
  std::string first_outcome;
  absl::StatusOr<IdempotentResult> result =
      idempotency_->Run(*key, identity, [&](eventstore::EventStore& store) {
        absl::StatusOr<http::Response> executed = command(store, context);
        // A concurrency conflict or a timeout may go the other way on a
        // retry: such an answer is not stored for the key.
        const bool lasting =
            executed.ok() || !IsTransientError(executed.status());
        http::Response response = finish(std::move(executed));
        first_outcome = *outcome;
        return StoredResponse{response.status, std::move(response.body),
                              lasting};
      });
  if (!result.ok()) return finish(result.status());
  http::Response response =
      http::JsonResponse(result->response.status, result->response.body);
  if (result->replayed) {
    response.SetHeader("Idempotent-Replayed", "true");
    *outcome = "replayed";
  } else {
    *outcome = first_outcome;
  }
  return response;
}

}  // namespace cqrs::commands
