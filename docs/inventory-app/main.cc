// inventory_app: stock of items, reserved for orders and released again.
//   POST /items/{id}/receive  {"quantity": 10}               StockReceived
//   POST /items/{id}/reserve  {"order": "o1", "quantity": 3}  Reserved
//   POST /items/{id}/release  {"order": "o1"}                 Released
//   GET  /items/{id}                  on hand, reserved, available
//   GET  /orders/{order}/reservations what one order holds, over all items
//
//   inventory_app serve | project | migrate | projections ... (--help)
#include <map>
#include <string>

#include "app/app.h"

namespace json = cqrs::json;
constexpr int64_t kMaxQuantity = 1000000000;

// Events; the first two are also the bodies of the commands that record
// them (Release takes only the order and releases all it holds).
struct StockReceived {
  int64_t quantity = 0;
  static auto Json() {
    return json::Shape<StockReceived>().Field(
        "quantity", &StockReceived::quantity, json::Range(1, kMaxQuantity));
  }
};
struct Reserved {
  std::string order;
  int64_t quantity = 0;
  static auto Json() {
    return json::Shape<Reserved>()
        .Field("order", &Reserved::order, json::Length(1, 64))
        .Field("quantity", &Reserved::quantity, json::Range(1, kMaxQuantity));
  }
};
struct Released {
  std::string order;
  int64_t quantity = 0;
  static auto Json() {
    return json::Shape<Released>()
        .Field("order", &Released::order)
        .Field("quantity", &Released::quantity);
  }
};
struct Release {
  std::string order;
  static auto Json() {
    return json::Shape<Release>().Field("order", &Release::order,
                                        json::Length(1, 64));
  }
};

// The item's state: on hand, held by orders in all and by each order.
struct Item {
  int64_t on_hand = 0, held = 0;
  std::map<std::string, int64_t> reserved;
};
using Items = cqrs::AggregateOf<Item, StockReceived, Reserved, Released>;

int main(int argc, char** argv) {
  cqrs::App app("inventory_app");
  app.Event<StockReceived>("StockReceived")
      .Event<Reserved>("Reserved")
      .Event<Released>("Released");
  Items& items = app.Aggregate<Item, StockReceived, Reserved, Released>("item")
                     .On<StockReceived>([](Item& i, const StockReceived& e) {
                       i.on_hand += e.quantity;
                     })
                     .On<Reserved>([](Item& i, const Reserved& e) {
                       i.reserved[e.order] += e.quantity;
                       i.held += e.quantity;
                     })
                     .On<Released>([](Item& i, const Released& e) {
                       i.reserved.erase(e.order);
                       i.held -= e.quantity;
                     });

  app.Command<StockReceived>(
      "POST", "/items/{id}/receive", items,
      [](const Item& i, const StockReceived& c) -> Items::Decision {
        if (i.on_hand > kMaxQuantity - c.quantity) {
          return cqrs::Reject("too_much_stock", "at most 10^9 on hand");
        }
        return Items::Emit(c);
      });
  app.Command<Reserved>(
      "POST", "/items/{id}/reserve", items,
      [](const Item& i, const Reserved& c) -> Items::Decision {
        if (c.quantity > i.on_hand - i.held) {
          return cqrs::Reject("insufficient_stock", "not that many available");
        }
        return Items::Emit(c);
      });
  app.Command<Release>("POST", "/items/{id}/release", items,
                       [](const Item& i, const Release& c) -> Items::Decision {
                         auto held = i.reserved.find(c.order);
                         if (held == i.reserved.end()) {
                           return cqrs::NotFound("reservation_not_found",
                                                 "the order holds none");
                         }
                         return Items::Emit(Released{c.order, held->second});
                       });

  // Per item, and per order (keyed by the order, across items).
  const char* kAdd =
      "INSERT INTO {stock_levels} AS t VALUES ($1, $2, $3) ON CONFLICT (item) "
      "DO UPDATE SET on_hand = t.on_hand + $2, reserved = t.reserved + $3";
  app.Projection("stock_levels")
      .Table("stock_levels",
             "CREATE TABLE {table} (item text PRIMARY KEY, on_hand bigint "
             "NOT NULL, reserved bigint NOT NULL)")
      .On<StockReceived>([=](cqrs::ReadModel& db, const auto& e) {
        db.Exec(kAdd, e.id, e.event.quantity, 0);
      })
      .On<Reserved>([=](cqrs::ReadModel& db, const auto& e) {
        db.Exec(kAdd, e.id, 0, e.event.quantity);
      })
      .On<Released>([=](cqrs::ReadModel& db, const auto& e) {
        db.Exec(kAdd, e.id, 0, -e.event.quantity);
      });
  app.Projection("reservations")
      .Table("reservations",
             "CREATE TABLE {table} (order_id text, item text, quantity "
             "bigint NOT NULL, PRIMARY KEY (order_id, item))")
      .On<Reserved>([](cqrs::ReadModel& db, const auto& e) {
        db.Exec(
            "INSERT INTO {reservations} AS t VALUES ($1, $2, $3) ON "
            "CONFLICT (order_id, item) DO UPDATE SET quantity = "
            "t.quantity + $3",
            e.event.order, e.id, e.event.quantity);
      })
      .On<Released>([](cqrs::ReadModel& db, const auto& e) {
        db.Exec("DELETE FROM {reservations} WHERE order_id = $1 AND item = $2",
                e.event.order, e.id);
      });

  app.Query("/items/{id}", {"stock_levels"}, [](cqrs::QueryContext& q) {
    return q.One(
        "SELECT item AS id, on_hand, reserved, on_hand - reserved "
        "AS available FROM {stock_levels} WHERE item = $1",
        {q.Param("id")}, "item_not_found");
  });
  app.Query("/orders/{order}/reservations", {"reservations"},
            [](cqrs::QueryContext& q) {
              return q.Many(
                  "SELECT item, quantity FROM {reservations} "
                  "WHERE order_id = $1 ORDER BY item",
                  {q.Param("order")});
            });
  return app.Main(argc, argv);
}
