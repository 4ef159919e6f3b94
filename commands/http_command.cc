#include "commands/http_command.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "framework/http/status_mapping.h"

namespace cqrs::commands {
namespace {

http::Response ToResponse(absl::StatusOr<http::Response> result) {
  if (!result.ok()) return http::ResponseFromStatus(result.status());
  return *std::move(result);
}

}  // namespace

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

http::Response HttpCommandRunner::Run(const http::Request& request,
                                      const Command& command) const {
  CommandContext context;
  context.metadata = CommandMetadata::ForCommand(request.correlation_id());
  absl::StatusOr<std::optional<int64_t>> if_match = ParseIfMatch(request);
  if (!if_match.ok()) return http::ResponseFromStatus(if_match.status());
  context.execute.required_version = *if_match;

  absl::optional<absl::string_view> key = request.Header("Idempotency-Key");
  if (!key.has_value()) return ToResponse(command(*store_, context));

  if (absl::Status valid = ValidateIdempotencyKey(*key); !valid.ok()) {
    return http::ResponseFromStatus(
        http::WithErrorCode(valid, "invalid_request"));
  }
  // The request's identity: anything that changes what it does.
  const std::string identity = absl::StrCat(
      request.method(), " ", request.target(), "\n", request.body());
  absl::StatusOr<IdempotentResult> result =
      idempotency_->Run(*key, identity, [&](eventstore::EventStore& store) {
        http::Response response = ToResponse(command(store, context));
        return StoredResponse{response.status, std::move(response.body)};
      });
  if (!result.ok()) return http::ResponseFromStatus(result.status());
  http::Response response =
      http::JsonResponse(result->response.status, result->response.body);
  if (result->replayed) response.SetHeader("Idempotent-Replayed", "true");
  return response;
}

}  // namespace cqrs::commands
