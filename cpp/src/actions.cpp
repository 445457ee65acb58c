#include "mettagrid/actions.hpp"

#include <algorithm>

namespace mettagrid {

void ActionHandler::handle(Game& game, int agent, int action, int arg) const {
  const Rules& rules = game.rules();
  const bool ok = run(game, agent, arg);
  Agent& a = game.agent(agent);
  a.last_action = action;
  a.last_action_arg = arg;
  a.last_success = ok;
  if (ok) {
    game.stat(agent, rules.stats.success(action)) += 1.0;
  } else {
    game.stat(agent, rules.stats.failed(action)) += 1.0;
    a.penalty += rules.spec.agent.action_failure_penalty;
  }
}

namespace {

// The converter the agent faces, or -1.
int faced_converter(Game& game, int agent) {
  const Agent& a = game.agent(agent);
  const Object& self = game.object(a.object);
  const int r = self.row + kDr[a.orientation], c = self.col + kDc[a.orientation];
  if (!game.in_bounds(r, c)) return -1;
  const int id = game.object_at(r, c);
  if (id < 0 || !game.object(id).is_converter) return -1;
  return id;
}

class Noop final : public ActionHandler {
  bool run(Game&, int, int) const override { return true; }
};

class Move final : public ActionHandler {
  bool run(Game& game, int agent, int dir) const override {
    Agent& a = game.agent(agent);
    a.orientation = static_cast<uint8_t>(dir);
    const Object& self = game.object(a.object);
    const int r = self.row + kDr[dir], c = self.col + kDc[dir];
    if (!game.in_bounds(r, c) || game.object_at(r, c) >= 0) return false;
    // Into another agent: a successful no-op, as in the original (agents are "usable" there, and
    // using one hands over shareable items, of which the arena has none).
    if (game.agent_at(r, c) >= 0) return true;
    game.move_agent(agent, r, c);
    return true;
  }
};

class Rotate final : public ActionHandler {
  bool run(Game& game, int agent, int dir) const override {
    game.agent(agent).orientation = static_cast<uint8_t>(dir);
    return true;
  }
};

class PutItems final : public ActionHandler {
  bool run(Game& game, int agent, int) const override {
    const int conv = faced_converter(game, agent);
    if (conv < 0) return false;
    const ObjectSpec& os = game.rules().spec.objects[game.object(conv).type_index];
    const int aobj = game.agent(agent).object;
    const StatLayout& st = game.rules().stats;
    bool moved = false;
    for (const auto& [item, need] : os.inputs) {
      const int n = game.add_to_converter(conv, item, std::min(need, game.inv(aobj, item)));
      if (n <= 0) continue;
      game.take_agent(agent, item, n);
      game.stat(agent, st.put(item)) += n;
      moved = true;
    }
    if (moved) game.converter_changed(conv);
    return moved;
  }
};

class GetItems final : public ActionHandler {
  bool run(Game& game, int agent, int) const override {
    const int conv = faced_converter(game, agent);
    if (conv < 0) return false;
    const ObjectSpec& os = game.rules().spec.objects[game.object(conv).type_index];
    const StatLayout& st = game.rules().stats;
    bool moved = false;
    for (const auto& [item, unused] : os.outputs) {
      (void)unused;
      const int held = game.inv(conv, item);
      if (held <= 0) continue;
      const int n = game.give_agent(agent, item, held);
      if (n <= 0) continue;
      game.inv(conv, item) -= n;
      game.stat(agent, st.get(item)) += n;
      moved = true;
    }
    if (moved) game.converter_changed(conv);
    return moved;
  }
};

class Attack final : public ActionHandler {
  bool run(Game& game, int agent, int which) const override {
    const Rules& rules = game.rules();
    const StatLayout& st = rules.stats;
    Agent& a = game.agent(agent);
    const Object& self = game.object(a.object);
    const int o = a.orientation, left = kLeftOf[o];
    // 3x3 block ahead: nearest row first; in each row straight ahead, then left, then right.
    int found = -1, count = 0;
    for (int dist = 1; dist <= 3 && count <= which; ++dist) {
      for (int side = 0; side < 3 && count <= which; ++side) {
        const int lat = side == 0 ? 0 : (side == 1 ? 1 : -1);
        const int r = self.row + kDr[o] * dist + kDr[left] * lat;
        const int c = self.col + kDc[o] * dist + kDc[left] * lat;
        if (!game.in_bounds(r, c)) continue;
        const int t = game.agent_at(r, c);
        if (t < 0) continue;
        found = game.object(t).agent;
        ++count;
      }
    }
    if (found < 0) return false;
    // Pay the cost (only when there is a target).
    for (const auto& [item, n] : rules.spec.attack_cost)
      if (game.inv(a.object, item) < n) return false;
    for (const auto& [item, n] : rules.spec.attack_cost) game.take_agent(agent, item, n);
    Agent& target = game.agent(found);
    // Defense: holding every defense resource blocks the attack and consumes them.
    if (!rules.spec.attack_defense.empty()) {
      bool defended = true;
      for (const auto& [item, n] : rules.spec.attack_defense)
        if (game.inv(target.object, item) < n) defended = false;
      if (defended) {
        for (const auto& [item, n] : rules.spec.attack_defense) game.take_agent(found, item, n);
        game.stat(agent, st.attack_blocked()) += 1.0;
        return true;
      }
    }
    game.stat(agent, st.attack_hit()) += 1.0;
    const bool was_frozen = target.frozen > 0;
    target.frozen = rules.spec.agent.freeze_duration;
    if (!was_frozen) {
      bool stole = false;
      for (int item = 0; item < rules.spec.num_items; ++item) {
        const int held = game.inv(target.object, item);
        if (held <= 0) continue;
        const int n = game.give_agent(agent, item, held);
        if (n <= 0) continue;
        game.take_agent(found, item, n);
        game.stat(agent, st.stolen(item)) += n;
        stole = true;
      }
      if (stole) game.stat(agent, st.attack_steals()) += 1.0;
    }
    return true;
  }
};

class Swap final : public ActionHandler {
  bool run(Game& game, int agent, int) const override {
    const Agent& a = game.agent(agent);
    const Object& self = game.object(a.object);
    const int r = self.row + kDr[a.orientation], c = self.col + kDc[a.orientation];
    if (!game.in_bounds(r, c) || game.agent_at(r, c) >= 0) return false;
    const int id = game.object_at(r, c);
    if (id < 0 || !game.object(id).swappable) return false;
    game.swap_agent_with_object(agent, id);
    return true;
  }
};

class ChangeGlyph final : public ActionHandler {
  bool run(Game& game, int agent, int glyph) const override {
    game.agent(agent).glyph = static_cast<uint8_t>(glyph);
    return true;
  }
};

}  // namespace

std::unique_ptr<const ActionHandler> make_action_handler(ActionKind kind) {
  switch (kind) {
    case ActionKind::Move: return std::make_unique<Move>();
    case ActionKind::Rotate: return std::make_unique<Rotate>();
    case ActionKind::PutItems: return std::make_unique<PutItems>();
    case ActionKind::GetItems: return std::make_unique<GetItems>();
    case ActionKind::Attack: return std::make_unique<Attack>();
    case ActionKind::Swap: return std::make_unique<Swap>();
    case ActionKind::ChangeGlyph: return std::make_unique<ChangeGlyph>();
    default: return std::make_unique<Noop>();
  }
}

}  // namespace mettagrid
