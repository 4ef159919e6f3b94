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
// after it, nested at most kMaxJsonDepth deep, and without U+0000 in any
// string (PostgreSQL cannot store it).
bool IsJsonObject(absl::string_view text);

}  // namespace cqrs

#endif  // FRAMEWORK_JSON_H_
