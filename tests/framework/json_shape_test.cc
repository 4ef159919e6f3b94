#include "framework/json_shape.h"

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "framework/error_code.h"
#include "framework/json.h"
#include "rapidjson/document.h"

// A type whose shape comes from a free function, as for a type the app
// cannot change.
namespace legacy {

struct Point {
  int32_t x = 0;
  int32_t y = 0;
};

cqrs::json::Shape<Point> JsonShape(const Point*) {
  return cqrs::json::Shape<Point>("Point")
      .Field("x", &Point::x)
      .Field("y", &Point::y, cqrs::json::Range(-10, 10));
}

}  // namespace legacy

namespace cqrs {
namespace json {
namespace {

struct Incremented {
  int64_t by = 0;
  std::optional<std::string> note;
  static auto Json() {
    return Shape<Incremented>()
        .Field("by", &Incremented::by, Range(1, 1000))
        .Field("note", &Incremented::note, Length(0, 200));
  }
};

struct Line {
  std::string sku;
  int32_t quantity = 0;
  static auto Json() {
    return Shape<Line>("Line")
        .Field("sku", &Line::sku, Length(1, 64))
        .Field("quantity", &Line::quantity, Range(1, 100));
  }
};

// Every supported member kind.
struct Order {
  std::string id;
  bool rush = false;
  int64_t total = 0;
  int32_t small = 0;
  double rate = 0;
  absl::Time at;
  std::string currency;
  std::string code;
  std::vector<Line> lines;
  std::map<std::string, int64_t> prices;
  std::vector<std::string> tags;
  std::vector<std::optional<int64_t>> slots;
  legacy::Point where;
  std::optional<std::string> note;
  std::optional<Line> gift;
  std::optional<int64_t> count;
  std::optional<absl::Time> shipped;
  std::optional<std::vector<int32_t>> sizes;
  static auto Json() {
    return Shape<Order>("Order")
        .Field("id", &Order::id, Length(1, 64), Description("Order id"))
        .Field("rush", &Order::rush)
        .Field("total", &Order::total)
        .Field("small", &Order::small)
        .Field("rate", &Order::rate, Range(0, 1))
        .Field("at", &Order::at)
        .Field("currency", &Order::currency, OneOf({"EUR", "USD"}))
        .Field("code", &Order::code, Pattern("^[A-Z]{3}$"))
        .Field("lines", &Order::lines, Items(1, 3))
        .Field("prices", &Order::prices)
        .Field("tags", &Order::tags)
        .Field("slots", &Order::slots)
        .Field("where", &Order::where)
        .Field("note", &Order::note, Length(0, 5))
        .Field("gift", &Order::gift)
        .Field("count", &Order::count, Range(0, 9))
        .Field("shipped", &Order::shipped)
        .Field("sizes", &Order::sizes, Items(0, 2));
  }
};

// Fields of every kind that holds text, for the escaping tests.
struct Texts {
  std::string text;
  std::map<std::string, std::string> map;
  Line line;
  static auto Json() {
    return Shape<Texts>()
        .Field("text", &Texts::text)
        .Field("map", &Texts::map)
        .Field("line", &Texts::line);
  }
};

// A recursive type: encodes and decodes (no schema).
struct Tree {
  std::vector<Tree> children;
  static auto Json() {
    return Shape<Tree>().Field("children", &Tree::children);
  }
};

const char kValidOrder[] =
    R"({"id":"o-1","rush":true,"total":-5,"small":7,"rate":0.5,)"
    R"("at":"2024-01-31T12:00:00Z","currency":"EUR","code":"ABC",)"
    R"("lines":[{"sku":"a","quantity":1}],"prices":{},"tags":[],"slots":[],)"
    R"("where":{"x":1,"y":2}})";

// `base` (a JSON object) with `member` ("\"a\":1") added at the end.
std::string Append(std::string base, const std::string& member) {
  base.pop_back();  // The closing brace.
  if (base.size() > 1) base += ",";
  return absl::StrCat(base, member, "}");
}

// `base` (a JSON object) with member `name` set to `value` (raw JSON), or
// removed when `value` is empty.
std::string With(const std::string& base, const std::string& name,
                 const std::string& value) {
  rapidjson::Document doc;
  doc.Parse(base.c_str());
  REQUIRE(doc.IsObject());
  doc.RemoveMember(name.c_str());
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  doc.Accept(writer);
  std::string text(buffer.GetString(), buffer.GetSize());
  if (value.empty()) return text;
  return Append(text, absl::StrCat("\"", name, "\":", value));
}

Order SampleOrder() {
  Order order;
  order.id = "o-1";
  order.rush = true;
  order.total = std::numeric_limits<int64_t>::min();
  order.small = std::numeric_limits<int32_t>::max();
  order.rate = 0.1;
  order.at = absl::FromUnixMillis(1706702400250);  // 2024-01-31T12:00:00.25Z
  order.currency = "USD";
  order.code = "XYZ";
  order.lines = {{"a", 1}, {"b", 100}};
  order.prices = {{"EUR", 5}, {"USD", std::numeric_limits<int64_t>::max()}};
  order.tags = {"x", ""};
  order.slots = {1, std::nullopt, 3};
  order.where = {-3, 10};
  order.note = "hi";
  order.gift = Line{"g", 2};
  order.count = 0;
  order.shipped = absl::FromUnixSeconds(0);
  order.sizes = std::vector<int32_t>{4, 5};
  return order;
}

rapidjson::Document ParseStrictly(const std::string& text) {
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseValidateEncodingFlag>(text.data(), text.size());
  INFO(text);
  REQUIRE_FALSE(doc.HasParseError());
  return doc;
}

std::string StringMember(const rapidjson::Value& object, const char* name) {
  REQUIRE(object.HasMember(name));
  const rapidjson::Value& value = object[name];
  REQUIRE(value.IsString());
  return std::string(value.GetString(), value.GetStringLength());
}

void CheckError(const absl::Status& status, const std::string& code,
                const std::string& message_part) {
  INFO(status.ToString());
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(ErrorCodeOf(status) == code);
  CHECK(absl::StrContains(status.message(), message_part));
}

TEST_CASE("the example type encodes, decodes and has a schema", "[framework]") {
  CHECK(Encode(Incremented{5, std::nullopt}) == R"({"by":5})");
  CHECK(Encode(Incremented{5, "a\"b"}) == R"({"by":5,"note":"a\"b"})");
  absl::StatusOr<Incremented> decoded =
      Decode<Incremented>(R"({"note":"x","by":7})");
  REQUIRE(decoded.ok());
  CHECK(decoded->by == 7);
  CHECK(decoded->note == std::optional<std::string>("x"));
  rapidjson::Document schema = ParseStrictly(SchemaOf<Incremented>());
  CHECK(schema["properties"]["by"]["maximum"].GetInt64() == 1000);
}

TEST_CASE("every member kind round-trips", "[framework]") {
  const Order order = SampleOrder();
  const std::string text = Encode(order);
  INFO(text);
  absl::StatusOr<Order> back = Decode<Order>(text);
  REQUIRE(back.ok());
  CHECK(back->id == order.id);
  CHECK(back->rush);
  CHECK(back->total == std::numeric_limits<int64_t>::min());
  CHECK(back->small == std::numeric_limits<int32_t>::max());
  CHECK(back->rate == 0.1);
  CHECK(back->at == order.at);
  CHECK(back->currency == "USD");
  CHECK(back->code == "XYZ");
  REQUIRE(back->lines.size() == 2);
  CHECK(back->lines[1].sku == "b");
  CHECK(back->lines[1].quantity == 100);
  CHECK(back->prices == order.prices);
  CHECK(back->tags == order.tags);
  CHECK(back->slots == order.slots);
  CHECK(back->where.x == -3);
  CHECK(back->where.y == 10);
  CHECK(back->note == order.note);
  REQUIRE(back->gift.has_value());
  CHECK(back->gift->sku == "g");
  CHECK(back->count == std::optional<int64_t>(0));
  CHECK(back->shipped == order.shipped);
  CHECK(back->sizes == order.sizes);
  // Encoding what was decoded gives the same text.
  CHECK(Encode(*back) == text);
}

TEST_CASE("encoding writes fields in declaration order, exactly",
          "[framework]") {
  const std::string text = Encode(SampleOrder());
  CHECK(absl::StartsWith(text, R"({"id":"o-1","rush":true,)"
                               R"("total":-9223372036854775808,)"
                               R"("small":2147483647,"rate":0.1,)"
                               R"("at":"2024-01-31T12:00:00.25Z",)"));
  CHECK(absl::StrContains(text, R"("prices":{"EUR":5,)"
                                R"("USD":9223372036854775807})"));
  CHECK(absl::StrContains(text, R"("slots":[1,null,3])"));
  CHECK(absl::StrContains(text, R"("shipped":"1970-01-01T00:00:00Z")"));
  CHECK(absl::EndsWith(text, R"("sizes":[4,5]})"));
}

TEST_CASE("empty optionals are left out and decode as nullopt", "[framework]") {
  Order order = SampleOrder();
  order.note.reset();
  order.gift.reset();
  order.count.reset();
  order.shipped.reset();
  order.sizes.reset();
  const std::string text = Encode(order);
  for (const char* name : {"note", "gift", "count", "shipped", "sizes"}) {
    INFO(name);
    CHECK_FALSE(absl::StrContains(text, absl::StrCat("\"", name, "\"")));
  }
  // Inside an array, an empty optional is null.
  CHECK(absl::StrContains(text, R"("slots":[1,null,3])"));
  absl::StatusOr<Order> back = Decode<Order>(text);
  REQUIRE(back.ok());
  CHECK_FALSE(back->note.has_value());
  CHECK_FALSE(back->gift.has_value());
  CHECK_FALSE(back->sizes.has_value());

  // Null decodes as nullopt too.
  absl::StatusOr<Order> nulls =
      Decode<Order>(With(With(kValidOrder, "note", "null"), "gift", "null"));
  REQUIRE(nulls.ok());
  CHECK_FALSE(nulls->note.has_value());
  CHECK_FALSE(nulls->gift.has_value());
}

TEST_CASE("a missing optional field resets a member the type defaults",
          "[framework]") {
  struct Defaulted {
    std::optional<int64_t> limit = 10;
    static auto Json() {
      return Shape<Defaulted>().Field("limit", &Defaulted::limit);
    }
  };
  absl::StatusOr<Defaulted> decoded = Decode<Defaulted>("{}");
  REQUIRE(decoded.ok());
  CHECK_FALSE(decoded->limit.has_value());
}

TEST_CASE("absl::Time is RFC 3339 in UTC", "[framework]") {
  struct Stamp {
    absl::Time at;
    static auto Json() { return Shape<Stamp>().Field("at", &Stamp::at); }
  };
  const absl::Time noon = absl::FromUnixSeconds(1706702400);
  CHECK(Encode(Stamp{noon}) == R"({"at":"2024-01-31T12:00:00Z"})");
  CHECK(Encode(Stamp{noon + absl::Nanoseconds(1)}) ==
        R"({"at":"2024-01-31T12:00:00.000000001Z"})");

  absl::StatusOr<Stamp> offset =
      Decode<Stamp>(R"({"at":"2024-01-31T13:30:00+01:30"})");
  REQUIRE(offset.ok());
  CHECK(offset->at == noon);

  for (const char* bad :
       {R"("2024-01-31")", R"("2024-01-31T12:00:00")", R"("infinite-future")",
        R"(" 2024-01-31T12:00:00Z")", R"("2024-01-31T12:00:00Z ")",
        R"("2024-13-01T12:00:00Z")", R"(1706702400)"}) {
    INFO(bad);
    // Raw text on purpose: `bad` is a JSON fragment (a string literal or a
    // number) that Decode must refuse; a writer could not produce it.
    CheckError(Decode<Stamp>(absl::StrCat(R"({"at":)", bad, "}")).status(),
               "invalid_request", "field \"at\" must be an RFC 3339");
  }
}

TEST_CASE("strict decoding names the field of every error", "[framework]") {
  struct Case {
    std::string json;
    std::string message;
  };
  const std::string base = kValidOrder;
  const std::vector<Case> cases = {
      {With(base, "colour", "1"), "unknown field \"colour\""},
      {With(base, "where", R"({"x":1,"y":2,"z":3})"),
       "unknown field \"where.z\""},
      {With(base, "id", ""), "field \"id\" is required"},
      {With(base, "id", "null"), "field \"id\" must be a string of 1 to 64"},
      {With(base, "lines", ""), "field \"lines\" is required"},
      {With(base, "where", R"({"x":1})"), "field \"where.y\" is required"},
      // Wrong type, per kind.
      {With(base, "id", "5"),
       "field \"id\" must be a string of 1 to 64 characters"},
      {With(base, "rush", "1"), "field \"rush\" must be true or false"},
      {With(base, "rush", "\"true\""), "field \"rush\" must be true or false"},
      {With(base, "total", "\"5\""),
       "field \"total\" must be an integer from -9223372036854775808 to "
       "9223372036854775807"},
      {With(base, "total", "1.0"), "field \"total\" must be an integer"},
      {With(base, "total", "1e3"), "field \"total\" must be an integer"},
      {With(base, "total", "9223372036854775808"),
       "field \"total\" must be an integer"},
      {With(base, "small", "2147483648"),
       "field \"small\" must be an integer from -2147483648 to 2147483647"},
      {With(base, "small", "true"), "field \"small\" must be an integer"},
      {With(base, "rate", "\"0.5\""),
       "field \"rate\" must be a number from 0 to 1"},
      {With(base, "at", "true"), "field \"at\" must be an RFC 3339"},
      {With(base, "lines", "{}"),
       "field \"lines\" must be an array of 1 to 3 items"},
      {With(base, "lines", "[1]"), "field \"lines[0]\" must be an object"},
      {With(base, "prices", "[]"), "field \"prices\" must be an object"},
      {With(base, "prices", R"({"EUR":"5"})"),
       "field \"prices.EUR\" must be an integer"},
      {With(base, "tags", R"(["a",2])"), "field \"tags[1]\" must be a string"},
      {With(base, "slots", R"([1,"x"])"),
       "field \"slots[1]\" must be an integer"},
      {With(base, "where", "[]"), "field \"where\" must be an object"},
      {With(base, "gift", "5"), "field \"gift\" must be an object"},
      {With(base, "sizes", R"([1,"2"])"),
       "field \"sizes[1]\" must be an integer"},
      // Out of range, too long or short, pattern and enum.
      {With(base, "rate", "1.5"),
       "field \"rate\" must be a number from 0 to 1"},
      {With(base, "rate", "-0.1"),
       "field \"rate\" must be a number from 0 to 1"},
      {With(base, "count", "10"),
       "field \"count\" must be an integer from 0 to 9"},
      {With(base, "count", "-1"),
       "field \"count\" must be an integer from 0 to 9"},
      {With(base, "where", R"({"x":1,"y":11})"),
       "field \"where.y\" must be an integer from -10 to 10"},
      {With(base, "id", "\"\""),
       "field \"id\" must be a string of 1 to 64 characters"},
      {With(base, "id", absl::StrCat("\"", std::string(65, 'i'), "\"")),
       "field \"id\" must be a string of 1 to 64 characters"},
      {With(base, "note",
            "\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\""),
       "field \"note\" must be a string of 0 to 5 characters"},
      {With(base, "lines",
            R"([{"sku":"a","quantity":1},{"sku":"b","quantity":1},)"
            R"({"sku":"","quantity":1}])"),
       "field \"lines[2].sku\" must be a string of 1 to 64 characters"},
      {With(base, "lines", R"([{"sku":"a","quantity":0}])"),
       "field \"lines[0].quantity\" must be an integer from 1 to 100"},
      {With(base, "lines", "[]"),
       "field \"lines\" must be an array of 1 to 3 items"},
      {With(base, "sizes", "[1,2,3]"),
       "field \"sizes\" must be an array of 0 to 2 items"},
      {With(base, "code", "\"abc\""), "field \"code\" must match ^[A-Z]{3}$"},
      {With(base, "code", "\"ABCD\""), "field \"code\" must match ^[A-Z]{3}$"},
      {With(base, "code", absl::StrCat("\"", std::string(2000, 'A'), "\"")),
       "field \"code\" must match"},
      {With(base, "currency", "\"GBP\""),
       "field \"currency\" must be one of \"EUR\", \"USD\""},
      {With(base, "currency", "\"eur\""),
       "field \"currency\" must be one of \"EUR\", \"USD\""},
      // Strings PostgreSQL cannot store.
      {With(base, "id", R"("a\u0000b")"),
       "field \"id\" must not contain U+0000"},
      {With(base, "tags", R"(["\u0000"])"),
       "field \"tags[0]\" must not contain U+0000"},
      {With(base, "id", R"("\udc00")"), "field \"id\" must be valid Unicode"},
      {With(base, "prices", R"({"a\u0000":1})"),
       "field \"prices.a\\u0000\" has a name that is not valid UTF-8"},
      // Duplicates, at the top and nested.
      {Append(base, R"("id":"o-2")"), "duplicate field \"id\""},
      {With(base, "lines",
            R"([{"sku":"a","quantity":1},{"sku":"a","sku":"b","quantity":1}])"),
       "duplicate field \"lines[1].sku\""},
      {With(base, "prices", R"({"EUR":1,"USD":2,"EUR":3})"),
       "duplicate field \"prices.EUR\""},
      {With(base, "colour", R"({"a":1,"a":1})"),
       "duplicate field \"colour.a\""},
  };
  for (const Case& c : cases) {
    INFO(c.json.substr(0, 300));
    CheckError(Decode<Order>(c.json).status(), "invalid_request", c.message);
  }
  // The base is valid: every case above fails because of its change.
  CHECK(Decode<Order>(base).ok());
}

TEST_CASE("decoding refuses what is not one JSON object", "[framework]") {
  for (const char* text :
       {"", " ", "{", R"({"by":})", R"({"by":1} x)", R"({'by':1})",
        R"({"by":1}{})", R"({"by":NaN})", "{\"note\":\"\xff\"}",
        "{\"note\":\"\xc3\"}", "{\"note\":\"\xed\xa0\x80\"}"}) {
    INFO(text);
    CheckError(Decode<Incremented>(text).status(), "invalid_json",
               "malformed JSON at offset");
  }
  for (const char* text : {"[]", "5", "\"by\"", "null", "true"}) {
    INFO(text);
    CheckError(Decode<Incremented>(text).status(), "invalid_request",
               "expected a JSON object");
  }
}

TEST_CASE("decoding refuses a raw NUL byte wherever it is", "[framework]") {
  using namespace std::string_literals;
  // RapidJSON alone reads the NUL as the end of the text and would accept
  // the first object, ignoring the rest.
  for (const std::string& text :
       {"{\"by\":5}\0{\"by\":7}garbage"s, "{\"by\":5}\0"s, "{\"by\":5\0}"s,
        "\0{\"by\":5}"s}) {
    CheckError(Decode<Incremented>(text).status(), "invalid_request",
               "must not contain a NUL byte");
  }
  CHECK(Decode<Incremented>(R"({"by":5})").ok());
}

TEST_CASE("decoding refuses deep nesting without exhausting the stack",
          "[framework]") {
  // 101 levels (the root object is the first) inside an unknown field: the
  // depth check comes first and names the top-level field.
  std::string deep = R"({"deep":)";
  deep += std::string(kMaxJsonDepth, '[');
  deep += std::string(kMaxJsonDepth, ']');
  deep += "}";
  CheckError(Decode<Incremented>(deep).status(), "invalid_request",
             "field \"deep\" nests objects and arrays more than 100 deep");

  std::string ok_depth = R"({"by":1,"deep":)";
  ok_depth += std::string(kMaxJsonDepth - 1, '[');
  ok_depth += std::string(kMaxJsonDepth - 1, ']');
  ok_depth += "}";
  CheckError(Decode<Incremented>(ok_depth).status(), "invalid_request",
             "unknown field \"deep\"");

  // Far deeper, complete and unclosed.
  const size_t kHuge = 1 << 20;
  std::string huge =
      R"({"deep":)" + std::string(kHuge, '[') + std::string(kHuge, ']') + "}";
  CheckError(Decode<Incremented>(huge).status(), "invalid_request",
             "field \"deep\" nests");
  CheckError(Decode<Incremented>(std::string(kHuge, '[')).status(),
             "invalid_json", "malformed JSON");

  // A recursive shape is bounded by the same limit.
  std::string tree = "{";
  for (int i = 0; i < 200; ++i) tree += R"("children":[{)";
  for (int i = 0; i < 200; ++i) tree += "}]";
  tree += "}";
  CheckError(Decode<Tree>(tree).status(), "invalid_request",
             "field \"children\" nests");
  absl::StatusOr<Tree> small =
      Decode<Tree>(R"({"children":[{"children":[]}]})");
  REQUIRE(small.ok());
  CHECK(small->children.size() == 1);
  CHECK(Encode(*small) == R"({"children":[{"children":[]}]})");
}

TEST_CASE("DecodeValue prefixes paths for embedded values", "[framework]") {
  rapidjson::Document doc;
  doc.Parse(R"({"line":{"sku":"","quantity":1}})");
  REQUIRE(doc.IsObject());
  CheckError(DecodeValue<Line>(doc["line"], "body.line").status(),
             "invalid_request",
             "field \"body.line.sku\" must be a string of 1 to 64");
  doc.Parse(R"({"line":{"sku":"s","quantity":1,"sku":"t"}})");
  CheckError(DecodeValue<Line>(doc["line"], "line").status(), "invalid_request",
             "duplicate field \"line.sku\"");
  doc.Parse(R"({"line":[]})");
  CheckError(DecodeValue<Line>(doc["line"], "line").status(), "invalid_request",
             "field \"line\" must be an object");
  doc.Parse(R"({"line":{"sku":"s","quantity":2}})");
  absl::StatusOr<Line> line = DecodeValue<Line>(doc["line"], "line");
  REQUIRE(line.ok());
  CHECK(line->quantity == 2);
}

TEST_CASE("Write embeds a value in a larger document", "[framework]") {
  rapidjson::StringBuffer buffer;
  JsonWriter writer(buffer);
  writer.StartObject();
  writer.Key("event");
  Write(Incremented{3, std::nullopt}, writer);
  writer.Key("n");
  writer.Int(1);
  writer.EndObject();
  CHECK(std::string(buffer.GetString()) == R"({"event":{"by":3},"n":1})");
}

TEST_CASE("every control character, quote and backslash is escaped",
          "[framework]") {
  std::string all;
  for (int c = 0; c < 0x20; ++c) all.push_back(static_cast<char>(c));
  all += "\"\\/\x7f";
  Texts texts;
  texts.line.quantity = 1;
  texts.text = all;
  texts.map[all] = all;
  texts.line.sku = all;
  const std::string text = Encode(texts);
  INFO(text);
  size_t raw_controls = 0;
  for (unsigned char c : text) raw_controls += c < 0x20 ? 1 : 0;
  CHECK(raw_controls == 0);
  CHECK(absl::StrContains(text, R"(\u0000)"));
  CHECK(absl::StrContains(text, R"(\n)"));
  CHECK(absl::StrContains(text, R"(\u001F)"));
  CHECK(absl::StrContains(text, R"(\"\\)"));

  rapidjson::Document doc = ParseStrictly(text);
  CHECK(StringMember(doc, "text") == all);
  REQUIRE(doc["map"].MemberCount() == 1);
  const rapidjson::Value& key = doc["map"].MemberBegin()->name;
  CHECK(std::string(key.GetString(), key.GetStringLength()) == all);
  CHECK(StringMember(doc["line"], "sku") == all);

  // Encoding escapes U+0000, but decoding refuses it: PostgreSQL cannot
  // store it.
  CheckError(Decode<Texts>(text).status(), "invalid_request",
             "must not contain U+0000");
  texts.text = all.substr(1);
  texts.map = {{all.substr(1), all.substr(1)}};
  texts.line.sku = "x";
  absl::StatusOr<Texts> back = Decode<Texts>(Encode(texts));
  REQUIRE(back.ok());
  CHECK(back->text == all.substr(1));
  CHECK(back->map == texts.map);
}

TEST_CASE("non-ASCII text passes through as UTF-8", "[framework]") {
  // 2-, 3- and 4-byte sequences: é, 中, 😀.
  const std::string text = "\xc3\xa9 \xe4\xb8\xad \xf0\x9f\x98\x80";
  Texts texts;
  texts.line.quantity = 1;
  texts.text = text;
  texts.map[text] = text;
  texts.line.sku = text;
  const std::string json = Encode(texts);
  INFO(json);
  CHECK_FALSE(absl::StrContains(json, "\\u"));
  CHECK(absl::StrContains(json, text));
  rapidjson::Document doc = ParseStrictly(json);
  CHECK(StringMember(doc, "text") == text);
  CHECK(doc["map"].HasMember(text.c_str()));
  CHECK(StringMember(doc["map"], text.c_str()) == text);
  CHECK(StringMember(doc["line"], "sku") == text);

  absl::StatusOr<Texts> back = Decode<Texts>(json);
  REQUIRE(back.ok());
  CHECK(back->text == text);
  CHECK(back->map == texts.map);
  CHECK(back->line.sku == text);

  // Escaped in the input, the same characters decode to the same UTF-8.
  absl::StatusOr<Line> escaped =
      Decode<Line>(R"({"sku":"\u00e9 \u4e2d \ud83d\ude00","quantity":1})");
  REQUIRE(escaped.ok());
  CHECK(escaped->sku == text);

  // Length counts characters: 5 here, in 10 bytes.
  CHECK(Decode<Incremented>(
            "{\"by\":1,\"note\":\"\xf0\x9f\x98\x80\xc3\xa9\xe4\xb8\xad"
            "ab\"}")
            .ok());
}

TEST_CASE("invalid UTF-8 never produces invalid JSON", "[framework]") {
  Texts texts;
  texts.text =
      "a\xff"
      "b\xc3";  // a stray byte, a truncated sequence
  texts.map["k\xed\xa0\x80"] = "\xc0\xaf";  // a surrogate, an overlong form
  texts.line.sku = "\xf4\x90\x80\x80";      // above U+10FFFF
  const std::string json = Encode(texts);
  INFO(json);
  CHECK(IsValidUtf8(json));
  rapidjson::Document doc = ParseStrictly(json);
  CHECK(StringMember(doc, "text") ==
        "a\xef\xbf\xbd"
        "b\xef\xbf\xbd");
  const rapidjson::Value& key = doc["map"].MemberBegin()->name;
  CHECK(std::string(key.GetString()) ==
        "k\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
  CHECK(StringMember(doc["map"], key.GetString()) ==
        "\xef\xbf\xbd\xef\xbf\xbd");
  CHECK(StringMember(doc["line"], "sku") ==
        "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
}

TEST_CASE("doubles are written so that they read back", "[framework]") {
  struct Number {
    double value = 0;
    static auto Json() {
      return Shape<Number>().Field("value", &Number::value);
    }
  };
  for (double value : {0.1, 1.0 / 3, -2.5e-300, 1e300, 0.0, 123456789.0}) {
    INFO(value);
    absl::StatusOr<Number> back = Decode<Number>(Encode(Number{value}));
    REQUIRE(back.ok());
    CHECK(back->value == value);
  }
  CHECK(Decode<Number>(R"({"value":5})")->value == 5);
  // JSON has no NaN: it is written as null, which keeps the output valid.
  const std::string nan =
      Encode(Number{std::numeric_limits<double>::quiet_NaN()});
  CHECK(nan == R"({"value":null})");
  CheckError(Decode<Number>(nan).status(), "invalid_request",
             "field \"value\" must be a number");
}

TEST_CASE("numbers decode exactly, and beyond a double they are an error",
          "[framework]") {
  struct Numbers {
    double value = 0;
    int64_t whole = 0;
    static auto Json() {
      return Shape<Numbers>()
          .Field("value", &Numbers::value)
          .Field("whole", &Numbers::whole);
    }
  };
  // The number texts go in as they are (RawValue), digit for digit.
  auto decode = [](const std::string& value, const std::string& whole) {
    rapidjson::StringBuffer buffer;
    JsonWriter writer(buffer);
    writer.StartObject();
    writer.Key("value");
    writer.RawValue(value.data(), value.size(), rapidjson::kNumberType);
    writer.Key("whole");
    writer.RawValue(whole.data(), whole.size(), rapidjson::kNumberType);
    writer.EndObject();
    return Decode<Numbers>(
        absl::string_view(buffer.GetString(), buffer.GetSize()));
  };
  // The nearest double, also where a fast path would be off by one unit in
  // the last place, and at both ends of the range.
  absl::StatusOr<Numbers> read =
      decode("2.2250738585072011e-308", "-9223372036854775808");
  REQUIRE(read.ok());
  CHECK(read->value == 2.2250738585072011e-308);
  CHECK(read->whole == std::numeric_limits<int64_t>::min());
  CHECK(decode("0", "9223372036854775807")->whole ==
        std::numeric_limits<int64_t>::max());
  for (const auto& [text, expected] :
       std::vector<std::pair<std::string, double>>{
           {"1.7976931348623157e308", 1.7976931348623157e308},
           {"5e-324", 5e-324},
           {"1e-400", 0.0},
           {"123456789012345678901234567890", 1.2345678901234568e29},
           {"0.30000000000000004", 0.30000000000000004},
           {"-0.0", -0.0},
           {"9007199254740993", 9007199254740992.0}}) {
    INFO(text);
    absl::StatusOr<Numbers> back = decode(text, "0");
    REQUIRE(back.ok());
    CHECK(back->value == expected);
  }
  CHECK(decode("-2147483649", "-2147483649")->whole == -2147483649LL);
  CHECK(decode("4294967296", "4294967296")->whole == 4294967296LL);
  // Found by fuzz/json_codec: RapidJSON's full-precision strtod read past
  // its table of powers of ten for this one.
  for (const char* text :
       {"9998888888888888888888888888888888888888888888888888888888888888888"
        "888888888888888899800e301",
        "1e309", "-1.8e308", "1e99999999999"}) {
    INFO(text);
    CheckError(decode(text, "0").status(), "invalid_json",
               "Number too big to be stored in double");
  }
  CheckError(decode("1", "9223372036854775808").status(), "invalid_request",
             "whole");
}

TEST_CASE("FindDuplicateKey finds a repeated name at any depth",
          "[framework]") {
  const auto find = [](const std::string& text) {
    rapidjson::Document doc;
    doc.Parse<rapidjson::kParseIterativeFlag>(text.c_str());
    REQUIRE_FALSE(doc.HasParseError());
    return FindDuplicateKey(doc);
  };
  CHECK_FALSE(find(R"({"a":1,"b":{"a":1},"c":[{"a":1},{"a":2}]})"));
  CHECK(find(R"({"owner":"a","owner":"b"})") ==
        absl::optional<std::string>("owner"));
  CHECK(find(R"({"a":[1,{"b":{"c":1,"c":2}}]})") ==
        absl::optional<std::string>("a[1].b.c"));
  CHECK(find(R"([{"x":1,"x":1}])") == absl::optional<std::string>("[0].x"));
  // Large objects are checked by sorting; the first repeat is named.
  std::string wide = "{";
  for (int i = 0; i < 40; ++i) absl::StrAppend(&wide, "\"k", i, "\":1,");
  wide += R"("k30":1,"k7":2})";
  CHECK(find(wide) == absl::optional<std::string>("k30"));
  std::string wide_ok = "{";
  for (int i = 0; i < 40; ++i) absl::StrAppend(&wide_ok, "\"k", i, "\":1,");
  wide_ok += R"("z":1})";
  CHECK_FALSE(find(wide_ok));
  // Far deeper than any recursion could go.
  const size_t kHuge = 1 << 20;
  std::string deep =
      std::string(kHuge, '[') + R"({"d":1,"d":2})" + std::string(kHuge, ']');
  absl::optional<std::string> found = find(deep);
  REQUIRE(found.has_value());
  CHECK(absl::EndsWith(*found, "[0][0].d"));
}

// Whether `build` aborts (SIGABRT), run in a child process.
template <typename F>
bool AbortsInChildProcess(F build) {
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::signal(SIGABRT, SIG_DFL);  // no Catch2 report from the child
    build();
    _exit(0);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

TEST_CASE("a shape that cannot work aborts when it is built", "[framework]") {
  CHECK(AbortsInChildProcess(
      [] { Shape<Line>().Field("sku", &Line::sku).Field("sku", &Line::sku); }));
  CHECK(AbortsInChildProcess(
      [] { Shape<Line>().Field("sku", &Line::sku, Pattern("([a-z]")); }));
  CHECK_FALSE(AbortsInChildProcess(
      [] { Shape<Line>().Field("sku", &Line::sku, Pattern("[a-z]")); }));
}

TEST_CASE("ShapeOf builds each shape once", "[framework]") {
  CHECK(&ShapeOf<Order>() == &ShapeOf<Order>());
  CHECK(&ShapeOf<legacy::Point>() == &ShapeOf<legacy::Point>());
}

TEST_CASE("the schema describes the shape", "[framework]") {
  const std::string text = SchemaOf<Order>();
  INFO(text);
  rapidjson::Document schema = ParseStrictly(text);
  CHECK(StringMember(schema, "$schema") ==
        "https://json-schema.org/draft/2020-12/schema");
  CHECK(StringMember(schema, "title") == "Order");
  CHECK(StringMember(schema, "type") == "object");
  CHECK(schema["additionalProperties"].IsFalse());

  // Properties in declaration order.
  const rapidjson::Value& properties = schema["properties"];
  std::vector<std::string> names;
  for (auto it = properties.MemberBegin(); it != properties.MemberEnd(); ++it) {
    names.emplace_back(it->name.GetString());
  }
  CHECK(names == std::vector<std::string>{
                     "id", "rush", "total", "small", "rate", "at", "currency",
                     "code", "lines", "prices", "tags", "slots", "where",
                     "note", "gift", "count", "shipped", "sizes"});

  // Required: every field that is not optional.
  std::vector<std::string> required;
  for (const auto& name : schema["required"].GetArray()) {
    required.emplace_back(name.GetString());
  }
  CHECK(required == std::vector<std::string>{"id", "rush", "total", "small",
                                             "rate", "at", "currency", "code",
                                             "lines", "prices", "tags", "slots",
                                             "where"});

  const rapidjson::Value& id = properties["id"];
  CHECK(StringMember(id, "type") == "string");
  CHECK(id["minLength"].GetInt() == 1);
  CHECK(id["maxLength"].GetInt() == 64);
  CHECK(StringMember(id, "description") == "Order id");
  CHECK(StringMember(properties["rush"], "type") == "boolean");
  CHECK(StringMember(properties["total"], "type") == "integer");
  CHECK_FALSE(properties["total"].HasMember("minimum"));
  CHECK(properties["small"]["minimum"].GetInt64() == -2147483648LL);
  CHECK(properties["small"]["maximum"].GetInt64() == 2147483647LL);
  CHECK(StringMember(properties["rate"], "type") == "number");
  CHECK(properties["rate"]["minimum"].GetDouble() == 0);
  CHECK(properties["rate"]["maximum"].GetDouble() == 1);
  CHECK(StringMember(properties["at"], "format") == "date-time");
  CHECK(properties["currency"]["enum"].Size() == 2);
  CHECK(StringMember(properties["code"], "pattern") == "^[A-Z]{3}$");

  const rapidjson::Value& lines = properties["lines"];
  CHECK(StringMember(lines, "type") == "array");
  CHECK(lines["minItems"].GetInt() == 1);
  CHECK(lines["maxItems"].GetInt() == 3);
  const rapidjson::Value& line = lines["items"];
  CHECK(StringMember(line, "title") == "Line");
  CHECK(StringMember(line, "type") == "object");
  CHECK(line["additionalProperties"].IsFalse());
  CHECK(line["properties"]["quantity"]["maximum"].GetInt() == 100);
  CHECK(line["required"].Size() == 2);

  const rapidjson::Value& prices = properties["prices"];
  CHECK(StringMember(prices, "type") == "object");
  CHECK(StringMember(prices["additionalProperties"], "type") == "integer");
  CHECK(StringMember(properties["tags"]["items"], "type") == "string");
  // Elements of vector<optional<X>> may be null.
  CHECK(properties["slots"]["items"]["type"].IsArray());
  CHECK(StringMember(properties["where"], "title") == "Point");
  CHECK(properties["where"]["properties"]["y"]["minimum"].GetInt() == -10);

  // Optional fields accept null, as decoding does.
  const rapidjson::Value& note_type = properties["note"]["type"];
  REQUIRE(note_type.IsArray());
  CHECK(std::string(note_type[0].GetString()) == "string");
  CHECK(std::string(note_type[1].GetString()) == "null");
  CHECK(properties["note"]["maxLength"].GetInt() == 5);
  REQUIRE(properties["gift"]["type"].IsArray());
  CHECK(std::string(properties["gift"]["type"][0].GetString()) == "object");
  CHECK(properties["gift"]["properties"].HasMember("sku"));
  CHECK(properties["count"]["maximum"].GetInt() == 9);
  CHECK(StringMember(properties["shipped"], "format") == "date-time");
  CHECK(properties["sizes"]["maxItems"].GetInt() == 2);
}

TEST_CASE("schema details: unanchored patterns, nullable enums, WriteSchema",
          "[framework]") {
  struct Tagged {
    std::optional<std::string> kind;
    std::string word;
    static auto Json() {
      return Shape<Tagged>()
          .Field("kind", &Tagged::kind, OneOf({"a", "b"}))
          .Field("word", &Tagged::word, Pattern("[a-z]+"));
    }
  };
  rapidjson::Document schema = ParseStrictly(SchemaOf<Tagged>());
  CHECK_FALSE(schema.HasMember("title"));
  const rapidjson::Value& kind_enum = schema["properties"]["kind"]["enum"];
  REQUIRE(kind_enum.Size() == 3);
  CHECK(kind_enum[2].IsNull());
  // A schema pattern matches anywhere; decoding matches the whole string.
  CHECK(StringMember(schema["properties"]["word"], "pattern") ==
        "^(?:[a-z]+)$");
  CheckError(Decode<Tagged>(R"({"word":"ab1"})").status(), "invalid_request",
             "field \"word\" must match [a-z]+");
  CHECK(Decode<Tagged>(R"({"word":"ab","kind":null})").ok());

  rapidjson::StringBuffer buffer;
  JsonWriter writer(buffer);
  WriteSchema<Tagged>(writer);
  rapidjson::Document embedded = ParseStrictly(buffer.GetString());
  CHECK_FALSE(embedded.HasMember("$schema"));
  CHECK(StringMember(embedded, "type") == "object");
}

}  // namespace
}  // namespace json
}  // namespace cqrs
