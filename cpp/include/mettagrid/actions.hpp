// One small class per action. The base does the shared bookkeeping (last action, success/failure
// stats, failure penalty); each subclass implements `run`, which returns whether the action succeeded.
#pragma once

#include <memory>

#include "mettagrid/game.hpp"

namespace mettagrid {

constexpr int kDr[4] = {-1, 1, 0, 0};  // north, south, west, east
constexpr int kDc[4] = {0, 0, -1, 1};
constexpr uint8_t kLeftOf[4] = {West, East, South, North};

class ActionHandler {
 public:
  virtual ~ActionHandler() = default;
  // Runs flat action `action` (parameter `arg`) for `agent`; the agent is not frozen.
  void handle(Game& game, int agent, int action, int arg) const;

 protected:
  virtual bool run(Game& game, int agent, int arg) const = 0;
};

std::unique_ptr<const ActionHandler> make_action_handler(ActionKind kind);

}  // namespace mettagrid
