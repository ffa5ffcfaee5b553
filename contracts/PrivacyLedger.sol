// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {FederatedRounds} from "./FederatedRounds.sol";

/// @title PrivacyLedger
/// @notice Each differentially private participant's per-round (epsilon, delta), committed in the same transaction
///         as its update, its running totals, and the operator's privacy budget.
///
/// A DP participant commits through this contract: `commitUpdateWithPrivacy` records the round's spend, checks the
/// budget, then commits the update to FederatedRounds with the participant's EIP-712 `Commitment` signature
/// (`FederatedRounds.commitUpdateSigned`, unchanged: the commitment type and its checks stay FederatedRounds').
/// Both happen or neither does. The mechanism behind the epsilon (noise multiplier, sample rate, steps, clip,
/// delta, accountant) is in the committed blob's header, so the content hash commits to it; the contract cannot
/// run the accountant, the auditor does (fedledger/audit.py) and fails the round if a record understates it.
///
/// Units: epsilon in micro-units (EPSILON_ONE = 1e6 is epsilon 1.0), delta in atto-units (DELTA_ONE = 1e18).
/// Composition enforced on-chain: basic (sequential) composition, the running totals are sums over rounds:
///   totalEpsilon_p = sum_r epsilon_{r,p} <= budget_p,   totalDelta_p = sum_r delta_{r,p} < DELTA_ONE.
/// It is conservative; the auditor also reports the tighter RDP-composed epsilon of the committed mechanisms.
///
/// Budgets: the operator sets a default (UNLIMITED until set) and optionally a per-participant budget that
/// overrides it. A record whose new total would exceed the budget in force reverts with PrivacyBudgetExceeded.
contract PrivacyLedger is AccessControl {
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    bytes32 public constant RELAYER_ROLE = keccak256("RELAYER_ROLE");
    uint64 public constant EPSILON_ONE = 1_000_000;
    uint64 public constant DELTA_ONE = 1_000_000_000_000_000_000;
    uint64 public constant UNLIMITED = type(uint64).max;

    /// One (round, participant) spend and the state right after it.
    struct Record {
        bytes32 contentHash;
        uint64 epsilon;
        uint64 delta;
        uint64 totalEpsilon;
        uint64 budget;
    }

    struct Spent {
        uint64 epsilon;
        uint64 delta;
        uint32 rounds;
    }

    struct Budget {
        bool set;
        uint64 epsilon;
    }

    FederatedRounds public immutable rounds;

    uint64 private _defaultBudget = UNLIMITED;
    mapping(address participant => Budget) private _budgets;
    mapping(uint256 roundId => mapping(address participant => Record)) private _records;
    mapping(address participant => Spent) private _spent;

    error PrivacyBudgetExceeded(address participant, uint64 spent, uint64 requested, uint64 budget);
    error PrivacyDeltaExhausted(address participant, uint64 spent, uint64 requested);
    error PrivacyDuplicateRecord(uint256 roundId, address participant, bytes32 contentHash);
    error PrivacyUnknownRound(uint256 roundId, uint256 roundCount);
    error PrivacyEpsilonOutOfRange(uint64 epsilon);
    error PrivacyDeltaOutOfRange(uint64 delta);

    event PrivacySpent(
        uint256 indexed roundId,
        address indexed participant,
        bytes32 indexed contentHash,
        uint64 epsilon,
        uint64 delta,
        uint64 totalEpsilon,
        uint64 totalDelta,
        uint64 budget
    );
    event DefaultBudgetSet(uint64 previous, uint64 budget, address indexed operator);
    event ParticipantBudgetSet(address indexed participant, bool set, uint64 budget, address indexed operator);

    constructor(address admin, FederatedRounds rounds_) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        rounds = rounds_;
    }

    // ------------------------------------------------------------------ operator

    /// @notice The budget of every participant without its own (UNLIMITED until set).
    function setDefaultBudget(uint64 epsilon) external onlyRole(OPERATOR_ROLE) {
        uint64 previous = _defaultBudget;
        _defaultBudget = epsilon;
        emit DefaultBudgetSet(previous, epsilon, msg.sender);
    }

    /// @notice `participant`'s own budget, overriding the default.
    function setParticipantBudget(address participant, uint64 epsilon) external onlyRole(OPERATOR_ROLE) {
        _budgets[participant] = Budget({set: true, epsilon: epsilon});
        emit ParticipantBudgetSet(participant, true, epsilon, msg.sender);
    }

    /// @notice `participant` follows the default budget again.
    function clearParticipantBudget(address participant) external onlyRole(OPERATOR_ROLE) {
        delete _budgets[participant];
        emit ParticipantBudgetSet(participant, false, _defaultBudget, msg.sender);
    }

    // --------------------------------------------------------------- participant

    /// @notice Record the caller's spend for `roundId` and commit its update (signed by the caller, EIP-712
    ///         `Commitment` of FederatedRounds) in one transaction.
    function commitUpdateWithPrivacy(
        uint256 roundId,
        bytes32 contentHash,
        string calldata cid,
        uint64 epsilon,
        uint64 delta,
        bytes calldata signature
    ) external {
        _record(roundId, msg.sender, contentHash, epsilon, delta);
        rounds.commitUpdateSigned(msg.sender, roundId, contentHash, cid, signature);
    }

    /// @notice The relayed variant (the API): the signature binds the update, hence the mechanism in its blob; the
    ///         epsilon is checked against that mechanism by the auditor. Relayers only, so nobody else can charge
    ///         a participant's budget with a signature it gave for another purpose.
    function commitUpdateWithPrivacySigned(
        address participant,
        uint256 roundId,
        bytes32 contentHash,
        string calldata cid,
        uint64 epsilon,
        uint64 delta,
        bytes calldata signature
    ) external onlyRole(RELAYER_ROLE) {
        _record(roundId, participant, contentHash, epsilon, delta);
        rounds.commitUpdateSigned(participant, roundId, contentHash, cid, signature);
    }

    // --------------------------------------------------------------------- views

    function recordOf(uint256 roundId, address participant) external view returns (Record memory) {
        return _records[roundId][participant];
    }

    function spentOf(address participant) external view returns (Spent memory) {
        return _spent[participant];
    }

    function defaultBudget() external view returns (uint64) {
        return _defaultBudget;
    }

    /// @notice The budget in force for `participant` (its own, else the default).
    function budgetOf(address participant) public view returns (uint64) {
        Budget storage b = _budgets[participant];
        return b.set ? b.epsilon : _defaultBudget;
    }

    /// @notice What `participant` may still spend (0 when its budget is used up).
    function remainingOf(address participant) external view returns (uint64) {
        uint64 budget = budgetOf(participant);
        uint64 spent = _spent[participant].epsilon;
        return spent >= budget ? 0 : budget - spent;
    }

    // ------------------------------------------------------------------ internal

    /// The only place a spend is written. Effects only; the caller commits (the interaction) afterwards, and the
    /// whole transaction reverts if FederatedRounds refuses the commitment.
    function _record(uint256 roundId, address participant, bytes32 contentHash, uint64 epsilon, uint64 delta) private {
        uint256 count = rounds.roundCount();
        if (roundId == 0 || roundId > count) revert PrivacyUnknownRound(roundId, count);
        Record storage existing = _records[roundId][participant];
        if (existing.contentHash != bytes32(0)) revert PrivacyDuplicateRecord(roundId, participant, existing.contentHash);
        if (epsilon == 0) revert PrivacyEpsilonOutOfRange(epsilon);
        if (delta == 0 || delta >= DELTA_ONE) revert PrivacyDeltaOutOfRange(delta);
        Spent storage s = _spent[participant];
        uint64 budget = budgetOf(participant);
        // In uint256, so the sums cannot overflow; the checks then bound them below uint64's range.
        uint256 totalEpsilon = uint256(s.epsilon) + epsilon;
        if (totalEpsilon > budget) revert PrivacyBudgetExceeded(participant, s.epsilon, epsilon, budget);
        uint256 totalDelta = uint256(s.delta) + delta;
        if (totalDelta >= DELTA_ONE) revert PrivacyDeltaExhausted(participant, s.delta, delta);

        s.epsilon = uint64(totalEpsilon);
        s.delta = uint64(totalDelta);
        s.rounds += 1;
        _records[roundId][participant] = Record({
            contentHash: contentHash,
            epsilon: epsilon,
            delta: delta,
            totalEpsilon: uint64(totalEpsilon),
            budget: budget
        });
        emit PrivacySpent(roundId, participant, contentHash, epsilon, delta, uint64(totalEpsilon), uint64(totalDelta), budget);
    }
}
