// Cursor pagination for query handlers: `limit` (default 50, at most 500)
// and opaque `after` cursors that carry the sort key of the last row, so
// that a walk through a table sees every row once, in a stable order, even
// while rows are being added.
//
//   ASSIGN_OR_RETURN(PageRequest page, ParsePageRequest(limit, after, 2));
//   ... WHERE (account_id, version) > ($1, $2) ORDER BY ... LIMIT page.limit
//   next = rows.size() == page.limit ? EncodeCursor({id, version}) : null
//
// Cursors are versioned, URL-safe base64 of length-prefixed key parts; they
// are not signed (a client can forge one, which only moves its own page).
//
// Thread-safety: plain functions; thread-safe.
#ifndef QUERIES_PAGINATION_H_
#define QUERIES_PAGINATION_H_

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cqrs::queries {

inline constexpr int kDefaultLimit = 50;
inline constexpr int kMaxLimit = 500;
inline constexpr size_t kMaxCursorLength = 1024;

struct PageRequest {
  int limit = kDefaultLimit;
  // The key of the last row of the previous page; empty for the first page.
  std::vector<std::string> after;
};

// An opaque cursor for the row with sort key `key`.
std::string EncodeCursor(const std::vector<std::string>& key);

// The key of a cursor made by EncodeCursor with `parts` parts.
// kInvalidArgument (error code invalid_request) for anything else, and for
// a key part that is not valid UTF-8 or holds a NUL byte (sort keys are
// text; EncodeCursor() of such a key makes a cursor this refuses).
absl::StatusOr<std::vector<std::string>> DecodeCursor(absl::string_view cursor,
                                                      size_t parts);

// Parses the `limit` and `after` query parameters (absent: nullopt).
// kInvalidArgument (invalid_request) for a limit that is not an integer in
// 1..500 or a bad cursor.
absl::StatusOr<PageRequest> ParsePageRequest(
    const std::optional<std::string>& limit,
    const std::optional<std::string>& after, size_t key_parts);

}  // namespace cqrs::queries

#endif  // QUERIES_PAGINATION_H_
