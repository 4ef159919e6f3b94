// Builds PostgreSQL array literals, so that a projection handler can apply a
// whole batch with one statement:
//
//   SqlArray ids, amounts;
//   for (...) { ids.Add(id); amounts.Add(amount); }
//   tx.exec_params("INSERT INTO t SELECT * FROM unnest($1::text[], "
//                  "$2::bigint[])", ids.literal(), amounts.literal());
//
// Elements are quoted and escaped, so any text is safe to pass; the literal
// is a bound parameter, never spliced into SQL.
//
// Thread-safety: a SqlArray is a value; one thread at a time.
#ifndef PROJECTIONS_SQL_ARRAY_H_
#define PROJECTIONS_SQL_ARRAY_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace cqrs::projections {

class SqlArray {
 public:
  void Add(absl::string_view text);
  void Add(int64_t number);
  void AddNull();

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // The array literal, e.g. {"a","b\"c",NULL,42}.
  std::string literal() const { return body_ + "}"; }

 private:
  void Separate();
  std::string body_ = "{";
  size_t size_ = 0;
};

}  // namespace cqrs::projections

#endif  // PROJECTIONS_SQL_ARRAY_H_
