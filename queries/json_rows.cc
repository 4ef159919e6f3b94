#include "queries/json_rows.h"

#include <cstdint>
#include <cstring>
#include <string>

#include <pqxx/field>
#include <pqxx/result>
#include <pqxx/row>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/civil_time.h"
#include "framework/json.h"
#include "framework/status_macros.h"
#include "rapidjson/reader.h"
#include "rapidjson/stream.h"

namespace cqrs::queries {
namespace {

// Built-in type OIDs (PostgreSQL's pg_type.dat; fixed across versions).
enum Oid : pqxx::oid {
  kBool = 16,
  kName = 19,
  kInt8 = 20,
  kInt2 = 21,
  kInt4 = 23,
  kText = 25,
  kJson = 114,
  kFloat4 = 700,
  kFloat8 = 701,
  kBpchar = 1042,
  kVarchar = 1043,
  kDate = 1082,
  kTimestamp = 1114,
  kTimestampTz = 1184,
  kNumeric = 1700,
  kUuid = 2950,
  kJsonb = 3802,
};

absl::Status Unwritable(const pqxx::field& field, absl::string_view what) {
  return absl::InternalError(
      absl::StrCat("column \"", field.name(), "\": ", what));
}

// JSON's number grammar (RFC 8259 section 6), which PostgreSQL's numeric
// and float output meets except for NaN and the infinities.
bool IsJsonNumber(absl::string_view s) {
  size_t i = 0;
  auto digits = [&] {
    const size_t start = i;
    while (i < s.size() && absl::ascii_isdigit(s[i])) ++i;
    return i - start;
  };
  if (i < s.size() && s[i] == '-') ++i;
  const size_t start = i;
  const size_t n = digits();
  if (n == 0 || (n > 1 && s[start] == '0')) return false;
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (digits() == 0) return false;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (digits() == 0) return false;
  }
  return i == s.size();
}

// Reads fixed-width fields of PostgreSQL's ISO date/time output.
class IsoScanner {
 public:
  explicit IsoScanner(absl::string_view text) : text_(text) {}

  bool Number(size_t width, int* out) {
    if (text_.size() < width) return false;
    int value = 0;
    for (size_t i = 0; i < width; ++i) {
      if (!absl::ascii_isdigit(text_[i])) return false;
      value = value * 10 + (text_[i] - '0');
    }
    text_.remove_prefix(width);
    *out = value;
    return true;
  }
  bool Literal(char c) {
    if (text_.empty() || text_[0] != c) return false;
    text_.remove_prefix(1);
    return true;
  }
  // Up to `max` digits, at least one.
  bool Digits(size_t max, absl::string_view* out) {
    size_t n = 0;
    while (n < text_.size() && n < max && absl::ascii_isdigit(text_[n])) ++n;
    if (n == 0) return false;
    *out = text_.substr(0, n);
    text_.remove_prefix(n);
    return true;
  }
  bool AtEnd() const { return text_.empty(); }

 private:
  absl::string_view text_;
};

bool ScanDate(IsoScanner& in, int* year, int* month, int* day) {
  return in.Number(4, year) && in.Literal('-') && in.Number(2, month) &&
         in.Literal('-') && in.Number(2, day) && *year >= 1 && *month >= 1 &&
         *month <= 12 && *day >= 1 && *day <= 31;
}

enum class Zone { kUtc, kOffset };

// "2024-05-01 14:00:00.25+02" -> "2024-05-01T12:00:00.250000Z". Fails on
// the infinities, years outside 1..9999 in UTC and other DateStyles.
bool Rfc3339Utc(absl::string_view text, Zone zone, std::string* out) {
  // Year 1 in UTC is 1 BC in time zones west of Greenwich.
  const bool bc = absl::ConsumeSuffix(&text, " BC");
  IsoScanner in(text);
  int year, month, day, hour, minute, second;
  if (!ScanDate(in, &year, &month, &day) || !in.Literal(' ') ||
      !in.Number(2, &hour) || !in.Literal(':') || !in.Number(2, &minute) ||
      !in.Literal(':') || !in.Number(2, &second)) {
    return false;
  }
  char micros[7] = "000000";
  if (in.Literal('.')) {
    absl::string_view fraction;
    if (!in.Digits(6, &fraction)) return false;
    std::memcpy(micros, fraction.data(), fraction.size());
  }
  int offset_seconds = 0;
  if (zone == Zone::kOffset) {
    int sign = 1;
    if (in.Literal('-')) {
      sign = -1;
    } else if (!in.Literal('+')) {
      return false;
    }
    int hours = 0, minutes = 0, seconds = 0;
    if (!in.Number(2, &hours)) return false;
    if (in.Literal(':')) {
      if (!in.Number(2, &minutes)) return false;
      if (in.Literal(':') && !in.Number(2, &seconds)) return false;
    }
    offset_seconds = sign * (hours * 3600 + minutes * 60 + seconds);
  }
  if (!in.AtEnd() || hour > 23 || minute > 59 || second > 59) return false;
  if (bc) year = 1 - year;  // 1 BC is year 0
  const absl::CivilSecond utc =
      absl::CivilSecond(year, month, day, hour, minute, second) -
      offset_seconds;
  if (utc.year() < 1 || utc.year() > 9999) return false;
  *out = absl::StrFormat("%04d-%02d-%02dT%02d:%02d:%02d.%sZ",
                         static_cast<int>(utc.year()), utc.month(), utc.day(),
                         utc.hour(), utc.minute(), utc.second(), micros);
  return true;
}

absl::Status WriteString(JsonWriter& writer, const pqxx::field& field,
                         absl::string_view text) {
  if (!IsValidUtf8(text)) return Unwritable(field, "text is not UTF-8");
  writer.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
  return absl::OkStatus();
}

// Hands a Reader's events to a JsonWriter, numbers as their text (the
// Writer's own RawNumber() would write them as strings).
class Condenser
    : public rapidjson::BaseReaderHandler<rapidjson::UTF8<>, Condenser> {
 public:
  using Ch = char;
  explicit Condenser(JsonWriter& writer) : writer_(writer) {}
  bool Null() { return writer_.Null(); }
  bool Bool(bool b) { return writer_.Bool(b); }
  bool RawNumber(const Ch* text, rapidjson::SizeType length, bool) {
    return writer_.RawValue(text, length, rapidjson::kNumberType);
  }
  bool String(const Ch* text, rapidjson::SizeType length, bool) {
    return writer_.String(text, length);
  }
  bool StartObject() { return writer_.StartObject(); }
  bool Key(const Ch* text, rapidjson::SizeType length, bool) {
    return writer_.Key(text, length);
  }
  bool EndObject(rapidjson::SizeType) { return writer_.EndObject(); }
  bool StartArray() { return writer_.StartArray(); }
  bool EndArray(rapidjson::SizeType) { return writer_.EndArray(); }

 private:
  JsonWriter& writer_;
};

absl::Status WriteEmbeddedJson(JsonWriter& writer, const pqxx::field& field) {
  // Streams the value into `writer`: validates it, drops its whitespace, and
  // keeps numbers' digits.
  constexpr unsigned kFlags = rapidjson::kParseNumbersAsStringsFlag |
                              rapidjson::kParseValidateEncodingFlag |
                              rapidjson::kParseIterativeFlag;
  rapidjson::Reader reader;
  rapidjson::StringStream in(field.c_str());
  Condenser condenser(writer);
  if (reader.Parse<kFlags>(in, condenser).IsError()) {
    return Unwritable(field,
                      absl::StrCat("the json value does not parse (at offset ",
                                   reader.GetErrorOffset(), ")"));
  }
  return absl::OkStatus();
}

absl::Status WriteValue(JsonWriter& writer, const pqxx::field& field) {
  if (field.is_null()) {
    writer.Null();
    return absl::OkStatus();
  }
  const absl::string_view text(field.c_str(), field.size());
  switch (field.type()) {
    case kInt2:
    case kInt4:
    case kInt8: {
      int64_t value = 0;
      if (!absl::SimpleAtoi(text, &value)) {
        return Unwritable(field, "integer out of range");
      }
      writer.Int64(value);
      return absl::OkStatus();
    }
    case kNumeric:
    case kFloat4:
    case kFloat8:
      if (!IsJsonNumber(text)) {
        return Unwritable(field, absl::StrCat(text, " is not a JSON number"));
      }
      // Not RawNumber(): RapidJSON's Writer quotes that.
      writer.RawValue(text.data(), text.size(), rapidjson::kNumberType);
      return absl::OkStatus();
    case kBool:
      writer.Bool(text == "t");
      return absl::OkStatus();
    case kJson:
    case kJsonb:
      return WriteEmbeddedJson(writer, field);
    case kTimestamp:
    case kTimestampTz: {
      std::string time;
      if (!Rfc3339Utc(text,
                      field.type() == kTimestampTz ? Zone::kOffset : Zone::kUtc,
                      &time)) {
        return Unwritable(
            field, absl::StrCat("timestamp '", text,
                                "' is not an ISO time in years 1..9999 (UTC)"));
      }
      writer.String(time.data(), static_cast<rapidjson::SizeType>(time.size()));
      return absl::OkStatus();
    }
    case kDate: {
      IsoScanner in(text);
      int year, month, day;
      if (!ScanDate(in, &year, &month, &day) || !in.AtEnd()) {
        return Unwritable(field, absl::StrCat("date '", text,
                                              "' is not an ISO date in "
                                              "years 1..9999"));
      }
      writer.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
      return absl::OkStatus();
    }
    default:  // text, varchar, bpchar, name, uuid and everything else
      return WriteString(writer, field, text);
  }
}

absl::Status CheckColumnNames(const pqxx::row& row) {
  for (pqxx::row::size_type i = 0; i < row.size(); ++i) {
    for (pqxx::row::size_type j = 0; j < i; ++j) {
      if (std::strcmp(row[i].name(), row[j].name()) == 0) {
        return absl::InternalError(
            absl::StrCat("two columns are named \"", row[i].name(),
                         "\": give one of them an alias"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status WriteRowUnchecked(JsonWriter& writer, const pqxx::row& row,
                               const JsonRowOptions& options) {
  writer.StartObject();
  for (const pqxx::field& field : row) {
    if (field.is_null() && options.nulls == NullColumns::kOmit) continue;
    const absl::string_view name = field.name();
    if (!IsValidUtf8(name)) {
      return Unwritable(field, "the column name is not UTF-8");
    }
    writer.Key(name.data(), static_cast<rapidjson::SizeType>(name.size()));
    RETURN_IF_ERROR(WriteValue(writer, field));
  }
  writer.EndObject();
  return absl::OkStatus();
}

std::string Text(const rapidjson::StringBuffer& buffer) {
  return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace

absl::Status WriteJsonValue(JsonWriter& writer, const pqxx::field& field) {
  return WriteValue(writer, field);
}

absl::Status WriteJsonRow(JsonWriter& writer, const pqxx::row& row,
                          const JsonRowOptions& options) {
  RETURN_IF_ERROR(CheckColumnNames(row));
  return WriteRowUnchecked(writer, row, options);
}

absl::Status WriteJsonRows(JsonWriter& writer, const pqxx::result& rows,
                           const JsonRowOptions& options) {
  writer.StartArray();
  if (!rows.empty()) {
    // Every row has the result's columns: check their names once.
    RETURN_IF_ERROR(CheckColumnNames(rows[0]));
  }
  for (const pqxx::row& row : rows) {
    RETURN_IF_ERROR(WriteRowUnchecked(writer, row, options));
  }
  writer.EndArray();
  return absl::OkStatus();
}

absl::StatusOr<std::string> RowToJson(const pqxx::row& row,
                                      const JsonRowOptions& options) {
  rapidjson::StringBuffer buffer;
  JsonWriter writer(buffer);
  RETURN_IF_ERROR(WriteJsonRow(writer, row, options));
  return Text(buffer);
}

absl::StatusOr<std::string> RowsToJson(const pqxx::result& rows,
                                       const JsonRowOptions& options) {
  rapidjson::StringBuffer buffer;
  JsonWriter writer(buffer);
  RETURN_IF_ERROR(WriteJsonRows(writer, rows, options));
  return Text(buffer);
}

}  // namespace cqrs::queries
