#include "projections/sql_array.h"

#include "absl/strings/str_cat.h"

namespace cqrs::projections {

void SqlArray::Separate() {
  if (size_++ > 0) body_.push_back(',');
}

void SqlArray::Add(absl::string_view text) {
  Separate();
  body_.push_back('"');
  for (char c : text) {
    if (c == '"' || c == '\\') body_.push_back('\\');
    body_.push_back(c);
  }
  body_.push_back('"');
}

void SqlArray::Add(int64_t number) {
  Separate();
  absl::StrAppend(&body_, number);
}

void SqlArray::AddNull() {
  Separate();
  body_.append("NULL");
}

}  // namespace cqrs::projections
