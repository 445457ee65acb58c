#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "mettagrid/actions.hpp"
#include "mettagrid/spec.hpp"

namespace mettagrid {

Rules::Rules(GameSpec s) : spec(std::move(s)) {
  // The pydantic config refuses all of these with the field's name; a hand-made spec is checked here
  // too, so that the engine never runs on values its arithmetic was not written for.
  auto fail = [](const std::string& what) { throw std::invalid_argument("spec: " + what); };
  const int n_items = spec.num_items;
  if (n_items <= 0 || static_cast<int>(spec.item_names.size()) != n_items) fail("num_items must match item_names");
  auto check_vec = [&](const auto& v, const char* name) {
    if (static_cast<int>(v.size()) != n_items) fail(std::string("agent.") + name + ": expected one entry per item");
  };
  check_vec(spec.agent.resource_limits, "resource_limits");
  check_vec(spec.agent.initial_inventory, "initial_inventory");
  check_vec(spec.agent.reward_weights, "reward_weights");
  check_vec(spec.agent.reward_caps, "reward_caps");
  if (spec.obs_width < 1 || spec.obs_width > 15 || spec.obs_height < 1 || spec.obs_height > 15)
    fail("obs_width/obs_height must be in 1..15");
  if (spec.num_tokens < 1) fail("num_tokens must be positive");
  auto check_item = [&](int item) { if (item < 0 || item >= n_items) fail("item id out of range"); };
  if (spec.max_steps < 0) fail("max_steps must be >= 0");
  if (spec.agent.freeze_duration < 0) fail("agent.freeze_duration must be >= 0");
  for (int i = 0; i < n_items; ++i) {
    if (spec.agent.resource_limits[i] < 0 || spec.agent.resource_limits[i] > kMaxItemCount)
      fail("agent.resource_limits must be in 0.." + std::to_string(kMaxItemCount));
    if (spec.agent.initial_inventory[i] < 0) fail("agent.initial_inventory must be >= 0");
  }
  for (const auto& g : spec.agent.shared_limits)
    if (g.limit < 0) fail("agent.shared_limits: limit must be >= 0");
  for (const auto& o : spec.objects) {
    for (const auto& p : o.inputs) check_item(p.first);
    for (const auto& p : o.outputs) check_item(p.first);
    for (const auto* v : {&o.inputs, &o.outputs})
      for (const auto& p : *v)
        if (p.second <= 0) fail("objects." + o.name + ": recipe amounts must be positive");
    if (o.max_output < 0 || o.conversion_ticks < 0 || o.cooldown < 0 || o.initial_resource_count < 0)
      fail("objects." + o.name + ": max_output, conversion_ticks, cooldown and initial_resource_count must be >= 0");
    // A zero-time cycle that gives back exactly what it takes would run forever within one tick.
    if (!o.is_wall && o.conversion_ticks == 0 && o.cooldown == 0 && !(o.inputs.empty() && o.outputs.empty())) {
      std::vector<long long> net(n_items, 0);
      for (const auto& p : o.outputs) net[p.first] += p.second;
      for (const auto& p : o.inputs) net[p.first] -= p.second;
      if (std::all_of(net.begin(), net.end(), [](long long d) { return d == 0; }))
        fail("objects." + o.name + ": with conversion_ticks 0 and cooldown 0 its outputs must differ from its "
             "inputs (it would convert forever in one tick)");
    }
  }
  for (const auto& p : spec.attack_cost) check_item(p.first);
  for (const auto& p : spec.attack_defense) check_item(p.first);

  // Observation features: the engine knows them by name, the spec gives their ids (0xFF marks an empty token).
  std::vector<bool> id_taken(255, false);
  auto claim = [&](int id, const std::string& what) {
    if (id < 0 || id >= 255 || id_taken[id])
      fail("feature " + what + ": id " + std::to_string(id) + " is out of 0..254 or taken");
    id_taken[id] = true;
  };
  std::fill(std::begin(feature_id), std::end(feature_id), 0xFF);  // 0xFF: not given
  for (const auto& [name, id] : spec.feature_ids) {
    const auto f = std::find(std::begin(feature::kNames), std::end(feature::kNames), name) - feature::kNames;
    if (f == feature::kCount) fail("unknown feature '" + name + "'");
    claim(id, "'" + name + "'");
    feature_id[f] = static_cast<uint8_t>(id);
  }
  for (int f = 0; f < feature::kCount; ++f)
    if (feature_id[f] == 0xFF) fail("feature_ids lacks '" + std::string(feature::kNames[f]) + "'");
  for (int i = 0; i < n_items; ++i) claim(spec.inventory_feature_base + i, "inventory of " + spec.item_names[i]);

  // Actions: (kind, argument) per flat id; the names only label the stats.
  num_actions = static_cast<int>(spec.actions.size());
  if (num_actions == 0) fail("no actions");
  if (spec.action_names.size() != spec.actions.size()) fail("expected one action name per action");
  for (int k = 0; k < static_cast<int>(ActionKind::Count); ++k) handlers.push_back(make_action_handler(ActionKind(k)));
  noop_action = -1;
  for (const auto& [name, arg] : spec.actions) {
    const auto k = std::find(std::begin(kActionKinds), std::end(kActionKinds), name) - kActionKinds;
    if (k == static_cast<int>(ActionKind::Count)) fail("unknown action kind '" + name + "'");
    const auto kind = static_cast<ActionKind>(k);
    if ((kind == ActionKind::Move || kind == ActionKind::Rotate) && (arg < 0 || arg > 3))
      fail(name + ": the direction must be in 0..3");
    if (kind == ActionKind::Noop && noop_action < 0) noop_action = static_cast<int>(actions.size());
    actions.push_back({kind, arg, handlers[k].get()});
  }
  noop_action = std::max(noop_action, 0);

  // Agents on the map.
  if (spec.map.kind == "ascii") {
    if (spec.map.grid.empty() || spec.map.grid[0].empty()) throw std::invalid_argument("spec.map: empty grid");
    for (const auto& row : spec.map.grid) {
      if (row.size() != spec.map.grid[0].size()) throw std::invalid_argument("spec.map: ragged grid");
      for (int v : row) {
        if (v == -2) ++num_agents;
        else if (v < -2 || v >= static_cast<int>(spec.objects.size()))
          throw std::invalid_argument("spec.map: bad cell code");
      }
    }
  } else if (spec.map.kind == "arena") {
    num_agents = spec.map.num_agents;
    for (const auto& p : spec.map.room_objects)
      if (p.first < 0 || p.first >= static_cast<int>(spec.objects.size()))
        throw std::invalid_argument("spec.map: bad room object index");
    const int rooms = spec.map.rooms_r * spec.map.rooms_c;
    if (rooms <= 0 || spec.map.room_size <= 0) throw std::invalid_argument("spec.map: bad room layout");
    long per_room = (num_agents + rooms - 1) / rooms;
    for (const auto& p : spec.map.room_objects) per_room += p.second;
    if (per_room > static_cast<long>(spec.map.room_size) * spec.map.room_size)
      throw std::invalid_argument("spec.map: room objects do not fit in a room");
  } else {
    throw std::invalid_argument("spec.map: unknown kind '" + spec.map.kind + "'");
  }
  if (num_agents <= 0) throw std::invalid_argument("spec.map: no agents");

  // Stats.
  stats.num_items = n_items;
  stats.num_actions = num_actions;
  stat_names.assign(stats.size(), "");
  for (int i = 0; i < n_items; ++i) {
    const auto& it = spec.item_names[i];
    stat_names[stats.gained(i)] = it + ".gained";
    stat_names[stats.lost(i)] = it + ".lost";
    stat_names[stats.get(i)] = it + ".get";
    stat_names[stats.put(i)] = it + ".put";
    stat_names[stats.stolen(i)] = it + ".stolen";
  }
  for (int a = 0; a < num_actions; ++a) {
    stat_names[stats.success(a)] = "action." + spec.action_names[a] + ".success";
    stat_names[stats.failed(a)] = "action." + spec.action_names[a] + ".failed";
  }
  stat_names[stats.invalid()] = "action.invalid";
  stat_names[stats.frozen_ticks()] = "status.frozen.ticks";
  stat_names[stats.attack_hit()] = "attack.hit";
  stat_names[stats.attack_blocked()] = "attack.blocked";
  stat_names[stats.attack_steals()] = "attack.steals";
  for (const auto& o : spec.objects) game_stat_names.push_back("objects." + o.name);
  game_stat_names.push_back("tokens.written");
  game_stat_names.push_back("tokens.dropped");

  // Type names.
  type_names.assign(1, "agent");
  for (const auto& o : spec.objects) {
    if (o.type_id >= static_cast<int>(type_names.size())) type_names.resize(o.type_id + 1);
    type_names[o.type_id] = o.name;
  }

  // Inventory limits and rewards.
  item_groups.assign(n_items, {});
  for (size_t g = 0; g < spec.agent.shared_limits.size(); ++g)
    for (int item : spec.agent.shared_limits[g].items) {
      check_item(item);
      item_groups[item].push_back(static_cast<int>(g));
    }
  for (int i = 0; i < n_items; ++i)
    if (spec.agent.reward_weights[i] != 0.0f) reward_items.push_back(i);

  // Observation window, nearest cells first.
  const int oh = spec.obs_height, ow = spec.obs_width, cr = oh / 2, cc = ow / 2;
  centre_location = static_cast<uint8_t>((cr << 4) | cc);
  for (int r = 0; r < oh; ++r)
    for (int c = 0; c < ow; ++c) obs_offsets.push_back({r - cr, c - cc, static_cast<uint8_t>((r << 4) | c)});
  std::stable_sort(obs_offsets.begin(), obs_offsets.end(), [](const ObsOffset& a, const ObsOffset& b) {
    const int da = std::abs(a.dr) + std::abs(a.dc), db = std::abs(b.dr) + std::abs(b.dc);
    if (da != db) return da < db;
    if (a.dr != b.dr) return a.dr < b.dr;
    return a.dc < b.dc;
  });
  pad = std::max(oh, ow);
}

Rules::~Rules() = default;

std::string incompatibility(const Rules& base, const Rules& other) {
  const GameSpec &a = base.spec, &b = other.spec;
  auto differs = [](const std::string& what, const std::string& x, const std::string& y) {
    return what + " differs (" + x + " vs " + y + ")";
  };
  if (base.num_agents != other.num_agents)
    return differs("the number of agents", std::to_string(base.num_agents), std::to_string(other.num_agents));
  if (a.actions != b.actions || a.action_names != b.action_names) {
    auto names = [](const std::vector<std::string>& v) {
      std::string s;
      for (const auto& n : v) s += (s.empty() ? "" : ",") + n;
      return "[" + s + "]";
    };
    return differs("the action set", names(a.action_names), names(b.action_names));
  }
  if (a.item_names != b.item_names) return "the items (inventory features) differ";
  if (a.feature_ids != b.feature_ids || a.inventory_feature_base != b.inventory_feature_base)
    return "the observation feature ids differ";
  if (a.num_tokens != b.num_tokens)
    return differs("the number of observation tokens", std::to_string(a.num_tokens), std::to_string(b.num_tokens));
  if (a.obs_width != b.obs_width || a.obs_height != b.obs_height)
    return differs("the observation window", std::to_string(a.obs_width) + "x" + std::to_string(a.obs_height),
                   std::to_string(b.obs_width) + "x" + std::to_string(b.obs_height));
  return "";
}

}  // namespace mettagrid
