// Status propagation macros, named as in later Abseil releases.
//
// Abseil 20220623 ships no status macros, so this is the one place that
// defines them for the whole project.
//
//   RETURN_IF_ERROR(store.Append(...));
//   ASSIGN_OR_RETURN(auto events, store.ReadStream(...));
//
// Thread-safety: macros only; no state.
#ifndef FRAMEWORK_STATUS_MACROS_H_
#define FRAMEWORK_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Evaluates `expr` (an absl::Status) and returns it from the current function
// when it is not OK.
#define RETURN_IF_ERROR(expr)                          \
  do {                                                 \
    ::absl::Status cqrs_status_macro_status_ = (expr); \
    if (!cqrs_status_macro_status_.ok()) {             \
      return cqrs_status_macro_status_;                \
    }                                                  \
  } while (false)

#define CQRS_STATUS_MACROS_CONCAT_INNER_(x, y) x##y
#define CQRS_STATUS_MACROS_CONCAT_(x, y) CQRS_STATUS_MACROS_CONCAT_INNER_(x, y)

// Evaluates `rexpr` (an absl::StatusOr<T>); on error returns its status from
// the current function, otherwise moves the value into `lhs`, which may be a
// declaration (`auto x`) or an existing variable.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  CQRS_ASSIGN_OR_RETURN_IMPL_(       \
      CQRS_STATUS_MACROS_CONCAT_(cqrs_status_or_value_, __LINE__), lhs, rexpr)

#define CQRS_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                \
  if (!statusor.ok()) {                                   \
    return std::move(statusor).status();                  \
  }                                                       \
  lhs = *std::move(statusor)

#endif  // FRAMEWORK_STATUS_MACROS_H_
