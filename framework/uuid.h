// UUID generation and validation.
//
//   std::string id = cqrs::NewUuid();          // "0192f3c4-...-..."
//   if (!cqrs::IsUuid(input)) return absl::InvalidArgumentError(...);
//
// NewUuid() produces version 7 UUIDs (RFC 9562): the first 48 bits are the
// Unix time in milliseconds, so ids created close in time are close in a
// B-tree index, which keeps inserts into the event-id index cheap.
//
// Thread-safety: all functions are safe to call concurrently.
#ifndef FRAMEWORK_UUID_H_
#define FRAMEWORK_UUID_H_

#include <string>

#include "absl/strings/string_view.h"

namespace cqrs {

// Returns a new random, time-ordered UUID (version 7) in canonical lower-case
// form: 8-4-4-4-12 hexadecimal digits.
std::string NewUuid();

// Returns true when `text` is a UUID in the canonical 8-4-4-4-12 hexadecimal
// form (either case). Any version is accepted.
bool IsUuid(absl::string_view text);

}  // namespace cqrs

#endif  // FRAMEWORK_UUID_H_
