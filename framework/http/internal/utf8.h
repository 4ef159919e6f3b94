// UTF-8 repair for text that goes into JSON documents.
//
//   writer.String(http_internal::ToValidUtf8(message));
//
// RapidJSON's Writer copies bytes as they are, so text that may hold bytes
// from a client (a decoded path, a header) is repaired first.
//
// Thread-safety: pure functions.
#ifndef FRAMEWORK_HTTP_INTERNAL_UTF8_H_
#define FRAMEWORK_HTTP_INTERNAL_UTF8_H_

#include <string>

#include "absl/strings/string_view.h"

namespace cqrs {
namespace http_internal {

// Returns true when `text` is well-formed UTF-8 (RFC 3629: no overlong
// forms, no surrogates, nothing above U+10FFFF).
bool IsValidUtf8(absl::string_view text);

// Returns `text` with every byte that is not part of a well-formed UTF-8
// sequence replaced by U+FFFD.
std::string ToValidUtf8(absl::string_view text);

}  // namespace http_internal
}  // namespace cqrs

#endif  // FRAMEWORK_HTTP_INTERNAL_UTF8_H_
