#include "framework/http/message.h"

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "framework/http/internal/utf8.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cqrs {
namespace http {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

absl::optional<absl::string_view> FindHeader(const HeaderList& headers,
                                             absl::string_view name) {
  for (const auto& header : headers) {
    if (absl::EqualsIgnoreCase(header.first, name)) {
      return absl::string_view(header.second);
    }
  }
  return absl::nullopt;
}

absl::StatusOr<ParamList> ParseQuery(absl::string_view query) {
  ParamList params;
  for (absl::string_view pair : absl::StrSplit(query, '&', absl::SkipEmpty())) {
    const size_t eq = pair.find('=');
    const absl::string_view raw_name = pair.substr(0, eq);
    const absl::string_view raw_value = eq == absl::string_view::npos
                                            ? absl::string_view()
                                            : pair.substr(eq + 1);
    absl::StatusOr<std::string> name =
        PercentDecode(raw_name, DecodeMode::kQuery);
    if (!name.ok()) return name.status();
    absl::StatusOr<std::string> value =
        PercentDecode(raw_value, DecodeMode::kQuery);
    if (!value.ok()) return value.status();
    params.emplace_back(*std::move(name), *std::move(value));
  }
  return params;
}

// PostgreSQL's text and jsonb cannot hold U+0000, and C strings end at it:
// a NUL byte anywhere in a request would be cut off somewhere downstream
// (libpq takes parameters as C strings; RapidJSON reads a NUL as the end of
// its input), so the request is refused whole.
bool HasNul(absl::string_view text) {
  return text.find('\0') != absl::string_view::npos;
}

absl::Status NulError(absl::string_view where) {
  return absl::InvalidArgumentError(
      absl::StrCat(where, " must not contain a NUL byte"));
}

absl::Status CheckNoNul(const Request& request) {
  if (HasNul(request.target()) || HasNul(request.path())) {
    return NulError("request target");
  }
  for (const auto& param : request.query_params()) {
    if (HasNul(param.first) || HasNul(param.second)) {
      return NulError("query parameter");
    }
  }
  for (const auto& header : request.headers()) {
    if (HasNul(header.first) || HasNul(header.second)) {
      return NulError("header");
    }
  }
  if (HasNul(request.body())) return NulError("request body");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> PercentDecode(absl::string_view text,
                                          DecodeMode mode) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%') {
      const int hi = i + 1 < text.size() ? HexValue(text[i + 1]) : -1;
      const int lo = i + 2 < text.size() ? HexValue(text[i + 2]) : -1;
      if (hi < 0 || lo < 0) {
        return absl::InvalidArgumentError(
            "malformed percent-encoding in request target");
      }
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && mode == DecodeMode::kQuery) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

absl::StatusOr<Request> Request::Create(std::string method, std::string target,
                                        HeaderList headers, std::string body) {
  if (target.empty() || target[0] != '/') {
    return absl::InvalidArgumentError(
        "request target must be an absolute path starting with '/'");
  }
  Request request;
  const size_t question = target.find('?');
  const absl::string_view target_view(target);
  request.raw_path_ = std::string(target_view.substr(0, question));
  absl::StatusOr<std::string> path =
      PercentDecode(request.raw_path_, DecodeMode::kPath);
  if (!path.ok()) return path.status();
  request.path_ = *std::move(path);
  if (question != std::string::npos) {
    absl::StatusOr<ParamList> query =
        ParseQuery(target_view.substr(question + 1));
    if (!query.ok()) return query.status();
    request.query_ = *std::move(query);
  }
  request.method_ = std::move(method);
  request.target_ = std::move(target);
  request.headers_ = std::move(headers);
  request.body_ = std::move(body);
  const absl::Status nul = CheckNoNul(request);
  if (!nul.ok()) return nul;
  return request;
}

absl::optional<absl::string_view> Request::Query(absl::string_view name) const {
  for (const auto& param : query_) {
    if (param.first == name) return absl::string_view(param.second);
  }
  return absl::nullopt;
}

bool Principal::HasScope(absl::string_view scope) const {
  for (const std::string& s : scopes) {
    if (s == scope) return true;
  }
  return false;
}

absl::string_view Request::actor() const {
  return principal_ != nullptr ? absl::string_view(principal_->id)
                               : kAnonymousActor;
}

absl::optional<absl::string_view> Request::Header(
    absl::string_view name) const {
  return FindHeader(headers_, name);
}

absl::string_view Request::PathParam(absl::string_view name) const {
  for (const auto& param : path_params_) {
    if (param.first == name) return param.second;
  }
  return absl::string_view();
}

absl::optional<absl::string_view> Response::Header(
    absl::string_view name) const {
  return FindHeader(headers, name);
}

void Response::SetHeader(absl::string_view name, absl::string_view value) {
  HeaderList kept;
  kept.reserve(headers.size() + 1);
  for (auto& header : headers) {
    if (!absl::EqualsIgnoreCase(header.first, name)) {
      kept.push_back(std::move(header));
    }
  }
  kept.emplace_back(std::string(name), std::string(value));
  headers = std::move(kept);
}

Response JsonResponse(int status, std::string body) {
  Response response;
  response.status = status;
  response.body = std::move(body);
  return response;
}

Response TextResponse(int status, std::string body) {
  Response response;
  response.status = status;
  response.content_type = "text/plain; charset=utf-8";
  response.body = std::move(body);
  return response;
}

std::string ErrorBody(absl::string_view code, absl::string_view message) {
  // Messages may quote client input, which need not be UTF-8.
  const std::string safe_code = http_internal::ToValidUtf8(code);
  const std::string safe_message = http_internal::ToValidUtf8(message);
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  writer.StartObject();
  writer.Key("error");
  writer.StartObject();
  writer.Key("code");
  writer.String(safe_code);
  writer.Key("message");
  writer.String(safe_message);
  writer.EndObject();
  writer.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

Response ErrorResponse(int status, absl::string_view code,
                       absl::string_view message) {
  return JsonResponse(status, ErrorBody(code, message));
}

}  // namespace http
}  // namespace cqrs
