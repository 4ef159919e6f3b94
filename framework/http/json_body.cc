#include "framework/http/json_body.h"

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "framework/http/status_mapping.h"
#include "framework/json_shape.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"

namespace cqrs {
namespace http {
namespace {

absl::Status InvalidJson(absl::string_view message) {
  return WithErrorCode(absl::InvalidArgumentError(message), "invalid_json");
}

const char* TypeName(const rapidjson::Value& value) {
  if (value.IsNull()) return "null";
  if (value.IsBool()) return "a boolean";
  if (value.IsString()) return "a string";
  if (value.IsNumber()) return "a number";
  if (value.IsArray()) return "an array";
  return "an object";
}

// Finds member `name`; nullptr when `object` is not an object, the member is
// missing, or it is null.
const rapidjson::Value* FindNonNull(const rapidjson::Value& object,
                                    const char* name) {
  if (!object.IsObject()) return nullptr;
  const auto it = object.FindMember(name);
  if (it == object.MemberEnd() || it->value.IsNull()) return nullptr;
  return &it->value;
}

absl::Status Missing(const char* name) {
  return InvalidRequest(absl::StrCat("field \"", name, "\" is required"));
}

absl::StatusOr<std::string> StringValue(const rapidjson::Value& value,
                                        const char* name, LengthBounds bounds) {
  if (!value.IsString()) {
    return InvalidRequest(absl::StrCat(
        "field \"", name, "\" must be a string, not ", TypeName(value)));
  }
  const size_t length = value.GetStringLength();
  if (std::memchr(value.GetString(), '\0', length) != nullptr) {
    return InvalidRequest(
        absl::StrCat("field \"", name, "\" must not contain U+0000"));
  }
  if (length < bounds.min || length > bounds.max) {
    if (bounds.max == std::numeric_limits<size_t>::max()) {
      return InvalidRequest(absl::StrCat(
          "field \"", name, "\" must be at least ", bounds.min, " bytes long"));
    }
    return InvalidRequest(absl::StrCat("field \"", name, "\" must be ",
                                       bounds.min, " to ", bounds.max,
                                       " bytes long"));
  }
  return std::string(value.GetString(), length);
}

absl::StatusOr<int64_t> Int64Value(const rapidjson::Value& value,
                                   const char* name, Int64Bounds bounds) {
  // RapidJSON keeps numbers written with a fraction or exponent as doubles,
  // so IsInt64() rejects 1.0 and 1e3 as well as values beyond int64.
  if (!value.IsNumber()) {
    return InvalidRequest(absl::StrCat(
        "field \"", name, "\" must be an integer, not ", TypeName(value)));
  }
  if (!value.IsInt64()) {
    return InvalidRequest(absl::StrCat(
        "field \"", name,
        "\" must be an integer without fraction or exponent, within 64 "
        "bits"));
  }
  const int64_t number = value.GetInt64();
  if (number < bounds.min || number > bounds.max) {
    return InvalidRequest(absl::StrCat("field \"", name, "\" must be between ",
                                       bounds.min, " and ", bounds.max));
  }
  return number;
}

absl::StatusOr<bool> BoolValue(const rapidjson::Value& value,
                               const char* name) {
  if (!value.IsBool()) {
    return InvalidRequest(absl::StrCat(
        "field \"", name, "\" must be a boolean, not ", TypeName(value)));
  }
  return value.GetBool();
}

}  // namespace

absl::Status ParseJsonBody(absl::string_view body, rapidjson::Document* doc,
                           EmptyBody empty) {
  if (absl::StripAsciiWhitespace(body).empty()) {
    if (empty == EmptyBody::kAsEmptyObject) {
      doc->SetObject();
      return absl::OkStatus();
    }
    return InvalidJson("request body is empty; expected a JSON object");
  }
  // RapidJSON reads a NUL byte as the end of its input even when given the
  // length: {"amount":5}\0garbage would parse as {"amount":5}.
  const size_t nul = body.find('\0');
  if (nul != absl::string_view::npos) {
    return InvalidRequest(absl::StrCat(
        "request body must not contain a NUL byte (one at offset ", nul, ")"));
  }
  // Iterative parsing: a body of a million '[' must not exhaust the stack.
  constexpr unsigned kFlags =
      rapidjson::kParseValidateEncodingFlag | rapidjson::kParseIterativeFlag;
  doc->Parse<kFlags>(body.data(), body.size());
  if (doc->HasParseError()) {
    return InvalidJson(
        absl::StrCat("malformed JSON at offset ", doc->GetErrorOffset(), ": ",
                     rapidjson::GetParseError_En(doc->GetParseError())));
  }
  if (!doc->IsObject()) {
    return InvalidRequest(absl::StrCat(
        "request body must be a JSON object, not ", TypeName(*doc)));
  }
  // RapidJSON keeps both members of {"owner":"a","owner":"b"} and FindMember
  // returns the first, while PostgreSQL's jsonb keeps the last: refuse the
  // ambiguity.
  const absl::optional<std::string> duplicate = json::FindDuplicateKey(*doc);
  if (duplicate.has_value()) {
    return InvalidRequest(absl::StrCat("duplicate field \"", *duplicate, "\""));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RequiredString(const rapidjson::Value& object,
                                           const char* name,
                                           LengthBounds bounds) {
  const rapidjson::Value* value = FindNonNull(object, name);
  if (value == nullptr) return Missing(name);
  return StringValue(*value, name, bounds);
}

absl::StatusOr<absl::optional<std::string>> OptionalString(
    const rapidjson::Value& object, const char* name, LengthBounds bounds) {
  const rapidjson::Value* value = FindNonNull(object, name);
  if (value == nullptr) return absl::optional<std::string>();
  absl::StatusOr<std::string> text = StringValue(*value, name, bounds);
  if (!text.ok()) return text.status();
  return absl::optional<std::string>(*std::move(text));
}

absl::StatusOr<int64_t> RequiredInt64(const rapidjson::Value& object,
                                      const char* name, Int64Bounds bounds) {
  const rapidjson::Value* value = FindNonNull(object, name);
  if (value == nullptr) return Missing(name);
  return Int64Value(*value, name, bounds);
}

absl::StatusOr<absl::optional<int64_t>> OptionalInt64(
    const rapidjson::Value& object, const char* name, Int64Bounds bounds) {
  const rapidjson::Value* value = FindNonNull(object, name);
  if (value == nullptr) return absl::optional<int64_t>();
  absl::StatusOr<int64_t> number = Int64Value(*value, name, bounds);
  if (!number.ok()) return number.status();
  return absl::optional<int64_t>(*number);
}

absl::StatusOr<bool> RequiredBool(const rapidjson::Value& object,
                                  const char* name) {
  const rapidjson::Value* value = FindNonNull(object, name);
  if (value == nullptr) return Missing(name);
  return BoolValue(*value, name);
}

absl::StatusOr<absl::optional<bool>> OptionalBool(
    const rapidjson::Value& object, const char* name) {
  const rapidjson::Value* value = FindNonNull(object, name);
  if (value == nullptr) return absl::optional<bool>();
  absl::StatusOr<bool> flag = BoolValue(*value, name);
  if (!flag.ok()) return flag.status();
  return absl::optional<bool>(*flag);
}

absl::Status RejectUnknownFields(
    const rapidjson::Value& object,
    std::initializer_list<absl::string_view> allowed) {
  if (!object.IsObject()) {
    return InvalidRequest(
        absl::StrCat("expected a JSON object, not ", TypeName(object)));
  }
  for (auto it = object.MemberBegin(); it != object.MemberEnd(); ++it) {
    const absl::string_view name(it->name.GetString(),
                                 it->name.GetStringLength());
    bool known = false;
    for (absl::string_view candidate : allowed) {
      if (candidate == name) {
        known = true;
        break;
      }
    }
    if (!known) {
      return InvalidRequest(absl::StrCat("unknown field \"", name, "\""));
    }
  }
  return absl::OkStatus();
}

}  // namespace http
}  // namespace cqrs
