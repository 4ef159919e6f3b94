#include "projections/internal/common.h"

#include <stdexcept>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace cqrs::projections_internal {
namespace {

class Context : public projections::ProjectionContext {
 public:
  Context(pqxx::transaction_base& tx,
          const absl::flat_hash_map<std::string, std::string>& tables,
          std::vector<std::function<void()>>* after_commit)
      : tx_(tx), tables_(tables), after_commit_(after_commit) {}
  pqxx::transaction_base& tx() override { return tx_; }
  const std::string& Table(absl::string_view name) const override {
    auto it = tables_.find(name);
    if (it == tables_.end()) {
      throw std::invalid_argument(
          absl::StrCat("no table '", name, "' in this projection"));
    }
    return it->second;
  }
  void AfterCommit(std::function<void()> fn) override {
    if (after_commit_ != nullptr) after_commit_->push_back(std::move(fn));
  }

 private:
  pqxx::transaction_base& tx_;
  const absl::flat_hash_map<std::string, std::string>& tables_;
  std::vector<std::function<void()>>* const after_commit_;
};

}  // namespace

std::string PhysicalTable(absl::string_view schema, absl::string_view table,
                          int generation) {
  return absl::StrCat(schema, ".", table, "_g", generation);
}

absl::flat_hash_map<std::string, std::string> TableMap(
    absl::string_view schema, const projections::Projection& p,
    int generation) {
  absl::flat_hash_map<std::string, std::string> out;
  for (const projections::ProjectionTable& t : p.tables) {
    out[t.name] = PhysicalTable(schema, t.name, generation);
  }
  return out;
}

uint64_t ParseXid(const pqxx::field& f) {
  uint64_t xid = 0;
  if (!absl::SimpleAtoi(absl::string_view(f.c_str(), f.size()), &xid)) {
    throw pqxx::conversion_error("transaction id out of range");
  }
  return xid;
}

namespace {

std::string Expand(absl::string_view sql, absl::string_view schema,
                   absl::string_view table, int generation) {
  return absl::StrReplaceAll(
      sql, {{"{table}", PhysicalTable(schema, table, generation)},
            {"{table_name}", absl::StrCat(table, "_g", generation)}});
}

}  // namespace

void CreateTables(pqxx::transaction_base& tx, absl::string_view schema,
                  const projections::Projection& p, int generation,
                  DeferredIndexes deferred) {
  for (const projections::ProjectionTable& t : p.tables) {
    tx.exec(Expand(t.ddl, schema, t.name, generation));
  }
  if (deferred == DeferredIndexes::kNow) {
    CreateDeferredIndexes(tx, schema, p, generation);
  }
}

void CreateDeferredIndexes(pqxx::transaction_base& tx, absl::string_view schema,
                           const projections::Projection& p, int generation) {
  for (const projections::ProjectionTable& t : p.tables) {
    for (const std::string& index : t.deferred_indexes) {
      tx.exec(Expand(index, schema, t.name, generation));
    }
  }
}

void PointViews(pqxx::dbtransaction& tx, absl::string_view schema,
                const projections::Projection& p, int generation) {
  for (const projections::ProjectionTable& t : p.tables) {
    const std::string view = absl::StrCat(schema, ".", t.name);
    const std::string select = absl::StrCat(
        " AS SELECT * FROM ", PhysicalTable(schema, t.name, generation));
    // Replacing keeps the view's identity, so queries waiting for it go on;
    // it works while the columns stay the same (a rebuild of the same
    // version). Otherwise the view is dropped and created anew.
    try {
      pqxx::subtransaction replace(tx, "replace_view");
      replace.exec(absl::StrCat("CREATE OR REPLACE VIEW ", view, select));
      replace.commit();
    } catch (const pqxx::sql_error&) {
      tx.exec(absl::StrCat("DROP VIEW IF EXISTS ", view));
      tx.exec(absl::StrCat("CREATE VIEW ", view, select));
    }
  }
}

absl::Status EnsureRegistered(PgPool& pool, absl::string_view schema,
                              const projections::Projection& p) {
  return pool.Run(
      PgPool::Retry::kOnBrokenConnection, [&](pqxx::connection& conn) {
        pqxx::work tx(conn);
        tx.exec_params("SELECT pg_advisory_xact_lock($1, hashtext($2))",
                       kRegisterLockClass, absl::StrCat(schema, ".", p.name));
        pqxx::result row =
            tx.exec_params(absl::StrCat("SELECT 1 FROM ", schema,
                                        ".projections WHERE name = $1"),
                           p.name);
        if (!row.empty()) return absl::OkStatus();
        CreateTables(tx, schema, p, 1, DeferredIndexes::kNow);
        PointViews(tx, schema, p, 1);
        tx.exec_params(absl::StrCat("INSERT INTO ", schema,
                                    ".projections (name, version, "
                                    "generation) VALUES ($1, $2, 1)"),
                       p.name, p.version);
        tx.commit();
        return absl::OkStatus();
      });
}

absl::Status ApplyHandler(
    const projections::Projection& p, pqxx::transaction_base& tx,
    const absl::flat_hash_map<std::string, std::string>& tables,
    projections::EventBatch events,
    std::vector<std::function<void()>>* after_commit) {
  Context ctx(tx, tables, after_commit);
  try {
    return p.apply(ctx, events);
  } catch (const pqxx::failure&) {
    // A database error: the same translation (and transient/deterministic
    // classification) as everywhere else, e.g. a lock timeout stays a
    // lock timeout.
    return StatusFromCurrentPgException();
  } catch (const std::exception& e) {
    return absl::InternalError(e.what());
  } catch (...) {
    // Whatever a handler throws, the event it was given fails the same way
    // each time: the error policy applies, as for any other handler error.
    return absl::InternalError(
        "the handler threw an exception of unknown type");
  }
}

}  // namespace cqrs::projections_internal
