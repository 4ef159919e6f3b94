// JsonWriter (framework/json_writer.h) writes exactly what RapidJSON's
// Writer over a StringBuffer writes.
#include "framework/json_writer.h"

#include <string>
#include <vector>

#include <catch2/catch.hpp>

namespace cqrs {
namespace {

// Writes the same document with `w`: strings and keys of every kind, raw
// values, numbers.
template <typename Writer>
void WriteDocument(Writer& w, const std::vector<std::string>& strings) {
  w.StartObject();
  for (const std::string& s : strings) {
    w.Key(s.data(), static_cast<rapidjson::SizeType>(s.size()));
    w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
  }
  w.Key("raw");
  w.StartArray();
  for (const char* raw : {R"({"a":[1,2,{"b":"c\"d"}]})", "[]", "{}"}) {
    w.RawValue(raw, std::char_traits<char>::length(raw),
               rapidjson::kObjectType);
  }
  w.RawValue("12345678901234567890", 20, rapidjson::kNumberType);
  w.EndArray();
  w.Key("n");
  w.Int64(-9007199254740993);
  w.Key("d");
  w.Double(0.1);
  w.Key("b");
  w.Bool(true);
  w.Key("z");
  w.Null();
  w.EndObject();
}

TEST_CASE("JsonWriter writes what RapidJSON's Writer writes", "[framework]") {
  std::vector<std::string> strings = {
      "",
      "plain",
      "quote\" and backslash\\ inside",
      "\"leading and trailing\"",
      "\\",
      "tab\tnewline\nreturn\rbell\x07 escape\x1b unit\x1f",
      std::string("nul\0inside", 10),
      "UTF-8: é €  (and a DEL \x7f)",
      "slash / stays",
      std::string(1000, 'x') + "\"" + std::string(1000, 'y'),
  };
  std::string all_bytes;
  for (int c = 1; c < 256; ++c) all_bytes.push_back(static_cast<char>(c));
  strings.push_back(all_bytes);

  rapidjson::StringBuffer expected_buffer;
  rapidjson::Writer<rapidjson::StringBuffer> expected(expected_buffer);
  WriteDocument(expected, strings);
  JsonBuffer buffer;
  JsonWriter w(buffer);
  WriteDocument(w, strings);
  CHECK(std::string(buffer.GetString(), buffer.GetSize()) ==
        std::string(expected_buffer.GetString(), expected_buffer.GetSize()));
  CHECK(w.IsComplete());

  // Reused after Clear() and Reset(), as a thread's scratch buffer is.
  buffer.Clear();
  w.Reset(buffer);
  w.String("again\n");
  CHECK(std::string(buffer.GetString(), buffer.GetSize()) == "\"again\\n\"");
}

}  // namespace
}  // namespace cqrs
