// JSON helpers on RapidJSON that every module shares.
//
//   if (!cqrs::IsJsonObject(body)) return absl::InvalidArgumentError(...);
//
// This header deliberately does not include RapidJSON, so that it stays cheap
// to include; code that builds documents includes RapidJSON itself.
//
// Thread-safety: all functions are safe to call concurrently.
#ifndef FRAMEWORK_JSON_H_
#define FRAMEWORK_JSON_H_

#include "absl/strings/string_view.h"

namespace cqrs {

// Deepest nesting of objects and arrays IsJsonObject() accepts.
inline constexpr int kMaxJsonDepth = 100;

// Returns true when `text` is one complete, valid JSON document (RFC 8259,
// UTF-8) whose top-level value is an object, with nothing but whitespace
// after it, nested at most kMaxJsonDepth deep, and whose strings hold
// neither U+0000 nor a lone surrogate escape such as "\udc00" (PostgreSQL
// cannot store the first and fails on the second when it reads the value).
bool IsJsonObject(absl::string_view text);

// True when `text` is well-formed UTF-8 (RFC 3629: shortest forms only, no
// surrogate code points, nothing above U+10FFFF), as PostgreSQL requires of
// text in a UTF-8 database.
bool IsValidUtf8(absl::string_view text);

}  // namespace cqrs

#endif  // FRAMEWORK_JSON_H_
