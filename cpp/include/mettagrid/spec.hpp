// The game description the engine runs: a plain mirror of GameConfig.engine_spec() (envs/config.py),
// and `Rules`, the tables compiled from it once and shared read-only by every game of a batch.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace mettagrid {

using ItemCount = std::pair<int, int>;  // (item id, amount)

struct ObjectSpec {
  std::string name;
  int type_id = 1;
  bool is_wall = true;
  bool swappable = false;
  std::vector<ItemCount> inputs, outputs;
  int max_output = 0, conversion_ticks = 0, cooldown = 0, initial_resource_count = 0, color = 0;
};

struct SharedLimit {
  std::vector<int> items;
  int limit = 0;
};

struct AgentSpec {
  std::vector<int> resource_limits;     // per item
  std::vector<SharedLimit> shared_limits;
  std::vector<int> initial_inventory;   // per item
  std::vector<float> reward_weights;    // per item
  std::vector<float> reward_caps;       // per item, +inf = uncapped
  int freeze_duration = 10;
  float action_failure_penalty = 0.0f;
  int group_id = 0;
};

struct MapSpec {
  std::string kind = "ascii";                  // "ascii" or "arena"
  std::vector<std::vector<int>> grid;          // ascii: object index | -1 empty | -2 agent
  int num_agents = 0, rooms_r = 1, rooms_c = 1, room_size = 1, border = 0, wall_index = -1;  // arena
  std::vector<ItemCount> room_objects;         // arena: (object index, count per room)
};

struct GameSpec {
  int max_steps = 1000;
  bool episode_truncates = false;
  bool random_first_episode_cut = false;
  int obs_width = 11, obs_height = 11, num_tokens = 200, num_items = 0;
  std::vector<std::string> item_names, action_names;        // names label the stats only
  std::vector<std::pair<std::string, int>> actions;         // per flat action: (kind, argument)
  std::map<std::string, int> feature_ids;                   // observation feature name -> id
  int inventory_feature_base = 0;                           // item i is feature inventory_feature_base + i
  std::vector<ObjectSpec> objects;
  AgentSpec agent;
  std::vector<ItemCount> attack_cost, attack_defense;
  int num_glyphs = 0;
  MapSpec map;
};

// The observation features the engine knows, by name, in the original's order (snapshot R). Their ids
// come from the spec (`feature_ids`, envs/config.py FEATURES); Rules refuses a name it does not know.
// Reserved, VisitationCounts, Tag, CooldownRemaining, Clipped and RemainingUses are never emitted.
namespace feature {
enum Name : uint8_t { kTypeId, kGroup, kFrozen, kOrientation, kReserved, kConverting, kSwappable,
                      kEpisodeCompletion, kLastAction, kLastActionArg, kLastReward, kGlyph, kVisitationCounts,
                      kTag, kCooldownRemaining, kClipped, kRemainingUses, kCount };
constexpr const char* kNames[kCount] = {
    "type_id", "agent:group", "agent:frozen", "agent:orientation", "agent:reserved_for_future_use",
    "converting", "swappable", "episode_completion_pct", "last_action", "last_action_arg", "last_reward",
    "agent:glyph", "agent:visitation_counts", "tag", "cooldown_remaining", "clipped", "remaining_uses"};
}  // namespace feature

// The largest count an agent may hold of one item: inventory tokens carry one byte.
constexpr int kMaxItemCount = 255;

// What a flat action id does; the spec names each kind as in kActionKinds (ActionsConfig's field names).
enum class ActionKind : uint8_t { Noop, Move, PutItems, GetItems, Attack, Rotate, Swap, ChangeGlyph, Count };
constexpr const char* kActionKinds[static_cast<int>(ActionKind::Count)] = {
    "noop", "move", "put_items", "get_items", "attack", "rotate", "swap", "change_glyph"};

struct ObsOffset {
  int dr, dc;
  uint8_t location;  // (row << 4) | col inside the window
};

// Per-agent stat ids, laid out once so that the hot loop indexes a flat float array.
struct StatLayout {
  int num_items = 0, num_actions = 0;
  int gained(int item) const { return item; }
  int lost(int item) const { return num_items + item; }
  int get(int item) const { return 2 * num_items + item; }
  int put(int item) const { return 3 * num_items + item; }
  int stolen(int item) const { return 4 * num_items + item; }
  int success(int action) const { return 5 * num_items + action; }
  int failed(int action) const { return 5 * num_items + num_actions + action; }
  int invalid() const { return 5 * num_items + 2 * num_actions; }
  int frozen_ticks() const { return invalid() + 1; }
  int attack_hit() const { return invalid() + 2; }
  int attack_blocked() const { return invalid() + 3; }
  int attack_steals() const { return invalid() + 4; }
  int size() const { return invalid() + 5; }
};

class ActionHandler;

// arg: the direction (north 0, south 1, west 2, east 3), attack index or glyph; handler: owned by Rules.
struct FlatAction { ActionKind kind; int arg; const ActionHandler* handler; };

// Everything derived from the spec once; shared by all games of a batch.
struct Rules {
  explicit Rules(GameSpec spec);
  ~Rules();
  Rules(const Rules&) = delete;
  Rules& operator=(const Rules&) = delete;

  GameSpec spec;
  int num_agents = 0;
  int num_actions = 0;
  std::vector<FlatAction> actions;         // per flat action id
  std::vector<std::unique_ptr<const ActionHandler>> handlers;  // one per ActionKind
  uint8_t feature_id[feature::kCount] = {};  // per feature::Name, from spec.feature_ids
  int noop_action = 0;                     // what an invalid id is recorded as
  StatLayout stats;
  std::vector<std::string> stat_names;     // per-agent stat names, indexed by stat id
  std::vector<std::string> game_stat_names;  // objects.<name>..., tokens.written, tokens.dropped
  std::vector<std::string> type_names;     // indexed by type id ("" where unused)
  std::vector<std::vector<int>> item_groups;  // per item: indices into agent.shared_limits
  std::vector<int> reward_items;           // items with a non-zero reward weight
  std::vector<ObsOffset> obs_offsets;      // window cells by Manhattan distance, then row, then column
  int pad = 0;                             // grid padding so windows never leave the array
  uint8_t centre_location = 0;
};

// Why games under `other` cannot share a batch (and its policy) with games under `base`: "" when they
// can, else what differs (the number of agents, the action list, the items or the observation features
// and shape). Everything else (map, objects, converters, rewards, limits, max_steps, attack costs) may differ.
std::string incompatibility(const Rules& base, const Rules& other);

}  // namespace mettagrid
