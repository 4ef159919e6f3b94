// A request body for tests and benches: a JSON object of string members
// then integer members, written (and escaped) by RapidJSON's writer.
//
//   std::string body = cqrs::testing::JsonBody({{"owner", "Ann"}},
//                                              {{"amount", 5}});
//
// Thread-safety: a pure function.
#ifndef TESTS_SUPPORT_JSON_BODY_H_
#define TESTS_SUPPORT_JSON_BODY_H_

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cqrs::testing {

inline std::string JsonBody(
    std::initializer_list<std::pair<const char*, std::string>> strings,
    std::initializer_list<std::pair<const char*, int64_t>> ints) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  for (const auto& [key, value] : strings) {
    w.Key(key);
    w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
  }
  for (const auto& [key, value] : ints) {
    w.Key(key);
    w.Int64(value);
  }
  w.EndObject();
  return buffer.GetString();
}

}  // namespace cqrs::testing

#endif  // TESTS_SUPPORT_JSON_BODY_H_
