// Reading JSON request bodies with errors a client can act on.
//
//   rapidjson::Document doc;
//   RETURN_IF_ERROR(http::ParseJsonBody(request.body(), &doc));
//   ASSIGN_OR_RETURN(int64_t amount, http::RequiredInt64(doc, "amount"));
//   constexpr http::LengthBounds kIdLength{1, 64};  // No braces in macros.
//   ASSIGN_OR_RETURN(absl::optional<std::string> id,
//                    http::OptionalString(doc, "account_id", kIdLength));
//
// Every error is kInvalidArgument with an error code attached (see
// status_mapping.h): "invalid_json" for a body that is not JSON, and
// "invalid_request" for a JSON body of the wrong shape, with a message that
// names the field. ResponseFromStatus() turns both into 400.
//
// Includes only RapidJSON's forward declarations; handlers that use the
// values include "rapidjson/document.h" themselves.
//
// Thread-safety: pure functions.
#ifndef FRAMEWORK_HTTP_JSON_BODY_H_
#define FRAMEWORK_HTTP_JSON_BODY_H_

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"
#include "framework/error_code.h"
#include "rapidjson/fwd.h"

namespace cqrs {
namespace http {

// What ParseJsonBody() makes of an empty (or all-whitespace) body.
enum class EmptyBody {
  kReject,         // 400 invalid_json: "request body is empty".
  kAsEmptyObject,  // Parsed as {} (e.g. POST /accounts/{id}/close).
};

// Parses `body` into `doc`, requiring a single JSON object in valid UTF-8.
// Returns invalid_json for malformed JSON (the message names the offset) and
// invalid_request for a body holding a NUL byte anywhere (RapidJSON alone
// would stop reading there and ignore the rest), for valid JSON that is not
// an object, or in which an object names a member twice at any depth
// ("duplicate field \"owner\""). A string escape "\u0000" parses; the
// field readers below refuse it.
absl::Status ParseJsonBody(absl::string_view body, rapidjson::Document* doc,
                           EmptyBody empty = EmptyBody::kReject);

// Inclusive bounds on a string's length in bytes.
struct LengthBounds {
  size_t min = 0;
  size_t max = std::numeric_limits<size_t>::max();
};

// Inclusive bounds on an integer.
struct Int64Bounds {
  int64_t min = std::numeric_limits<int64_t>::min();
  int64_t max = std::numeric_limits<int64_t>::max();
};

// The string member `name` of `object`. Returns invalid_request when it is
// missing, null, not a string, holds U+0000, or its length is out of
// `bounds`.
absl::StatusOr<std::string> RequiredString(const rapidjson::Value& object,
                                           const char* name,
                                           LengthBounds bounds = {});
// As RequiredString(), but a missing or null member is nullopt.
absl::StatusOr<absl::optional<std::string>> OptionalString(
    const rapidjson::Value& object, const char* name, LengthBounds bounds = {});

// The integer member `name` of `object`. Strict: floats (even 1.0 or 1e3),
// strings, booleans, values outside int64 and outside `bounds` are
// invalid_request.
absl::StatusOr<int64_t> RequiredInt64(const rapidjson::Value& object,
                                      const char* name,
                                      Int64Bounds bounds = {});
// As RequiredInt64(), but a missing or null member is nullopt.
absl::StatusOr<absl::optional<int64_t>> OptionalInt64(
    const rapidjson::Value& object, const char* name, Int64Bounds bounds = {});

// The boolean member `name` of `object`; anything but true/false is
// invalid_request.
absl::StatusOr<bool> RequiredBool(const rapidjson::Value& object,
                                  const char* name);
// As RequiredBool(), but a missing or null member is nullopt.
absl::StatusOr<absl::optional<bool>> OptionalBool(
    const rapidjson::Value& object, const char* name);

// Returns invalid_request naming the first member of `object` whose name is
// not in `allowed`, so that a misspelt optional field is not silently
// ignored.
absl::Status RejectUnknownFields(
    const rapidjson::Value& object,
    std::initializer_list<absl::string_view> allowed);

// kInvalidArgument with code invalid_request and `message`: for checks the
// helpers above do not cover (e.g. "from and to must differ"). Declared in
// framework/error_code.h.
using ::cqrs::InvalidRequest;

}  // namespace http
}  // namespace cqrs

#endif  // FRAMEWORK_HTTP_JSON_BODY_H_
