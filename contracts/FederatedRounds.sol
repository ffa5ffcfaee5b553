// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ParticipantRegistry} from "./ParticipantRegistry.sol";
import {FedToken} from "./FedToken.sol";

/// @title FederatedRounds
/// @notice The round state machine of fedledger.
///
///   None --openRound--> Open --closeRound / deadline--> Closed --finalizeRound--> Finalized
///
/// Each round names its base global model (the previous round's output, or the genesis model),
/// the hash of the aggregation rule and its parameters, a reward budget and a reputation decay.
/// Every registered, active participant commits at most one update per round, either by its own
/// transaction or by an EIP-712 signature that anyone may relay. The aggregator role finalizes the
/// round with the new global model, the scores and statuses of all committed updates; the contract
/// then derives reputation and rewards from them with the integer formulas below, so the
/// aggregator cannot pay anyone more than the published rule allows.
///
///   weight_i     = status_i == ACCEPTED ? max(score_i, 0) : 0              (score in 1e-6 units)
///   reward_i     = total == 0 ? 0 : rewardBudget * weight_i / total        (total = sum of weights)
///   reputation_i = (reputation_i * decay + weight_i * (ONE - decay)) / ONE (decay in 1e-6 units)
contract FederatedRounds is AccessControl, EIP712 {
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    bytes32 public constant AGGREGATOR_ROLE = keccak256("AGGREGATOR_ROLE");
    bytes32 public constant COMMITMENT_TYPEHASH = keccak256("Commitment(uint256 roundId,bytes32 contentHash,string cid)");

    int32 public constant SCORE_ONE = 1_000_000;
    uint32 public constant PPM_ONE = 1_000_000;
    uint8 public constant STATUS_ACCEPTED = 0;
    uint8 public constant MAX_STATUS = 15;

    enum RoundState {
        None,
        Open,
        Closed,
        Finalized
    }

    struct Round {
        RoundState state;
        uint64 openedAt;
        uint64 deadline;
        uint32 submissions;
        uint32 accepted;
        uint32 reputationDecay;
        bytes32 baseModelHash;
        bytes32 ruleHash;
        bytes32 newModelHash;
        uint256 rewardBudget;
        uint256 minted;
    }

    ParticipantRegistry public immutable registry;
    FedToken public immutable token;

    uint256 private _roundCount;
    mapping(uint256 roundId => Round) private _rounds;
    /// One slot per commitment: the content hash (never zero). When and by whom is in the UpdateCommitted event.
    mapping(uint256 roundId => mapping(address participant => bytes32 contentHash)) private _commitments;
    bytes32 private _globalModelHash;
    string private _globalModelCid;

    error RoundsGenesisAlreadyPublished(bytes32 modelHash);
    error RoundsNoGenesisModel();
    error RoundsEmptyHash();
    error RoundsEmptyCid();
    error RoundsUnknownRound(uint256 roundId, uint256 roundCount);
    error RoundsPreviousRoundNotFinalized(uint256 roundId, RoundState state);
    error RoundsDeadlineNotInFuture(uint64 deadline, uint256 timestamp);
    error RoundsDecayOutOfRange(uint32 decay);
    error RoundsRoundNotOpen(uint256 roundId, RoundState state);
    error RoundsDeadlinePassed(uint256 roundId, uint64 deadline, uint256 timestamp);
    error RoundsParticipantNotActive(address participant, ParticipantRegistry.Status status);
    error RoundsDuplicateCommitment(uint256 roundId, address participant, bytes32 committedHash);
    error RoundsInvalidSignature(address participant, address recovered);
    error RoundsSubmissionsStillOpen(uint256 roundId, uint64 deadline, uint256 timestamp);
    error RoundsAlreadyFinalized(uint256 roundId, bytes32 newModelHash);
    error RoundsLengthMismatch(uint256 participants, uint256 scores, uint256 statuses);
    error RoundsSubmissionCountMismatch(uint256 roundId, uint256 committed, uint256 given);
    error RoundsParticipantsNotSorted(uint256 index, address previous, address current);
    error RoundsNotCommitted(uint256 roundId, address participant);
    error RoundsScoreOutOfRange(address participant, int32 score);
    error RoundsStatusOutOfRange(address participant, uint8 status);

    event GenesisModelPublished(bytes32 indexed modelHash, string cid);
    event RoundOpened(
        uint256 indexed roundId,
        bytes32 indexed baseModelHash,
        bytes32 indexed ruleHash,
        uint64 deadline,
        uint256 rewardBudget,
        uint32 reputationDecay,
        string ruleCid
    );
    event UpdateCommitted(
        uint256 indexed roundId, address indexed participant, bytes32 indexed contentHash, string cid, address relayer
    );
    event RoundClosed(uint256 indexed roundId, uint64 closedAt, uint32 submissions);
    event ContributionScored(
        uint256 indexed roundId, address indexed participant, uint8 indexed status, int32 score, uint256 reward, uint32 reputation
    );
    event RoundFinalized(
        uint256 indexed roundId,
        bytes32 indexed newModelHash,
        bytes32 indexed baseModelHash,
        string newModelCid,
        uint32 accepted,
        uint256 minted
    );

    constructor(address admin, ParticipantRegistry registry_, FedToken token_) EIP712("FedLedger", "1") {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        registry = registry_;
        token = token_;
    }

    // ------------------------------------------------------------------ operator

    /// @notice Publish the genesis global model, once. Round 1 trains on it.
    function publishGenesis(bytes32 modelHash, string calldata cid) external onlyRole(OPERATOR_ROLE) {
        if (_globalModelHash != bytes32(0)) revert RoundsGenesisAlreadyPublished(_globalModelHash);
        _requireRef(modelHash, cid);
        _globalModelHash = modelHash;
        _globalModelCid = cid;
        emit GenesisModelPublished(modelHash, cid);
    }

    /// @notice Open the next round on the current global model. The previous round must be finalized.
    function openRound(
        uint64 deadline,
        bytes32 ruleHash,
        string calldata ruleCid,
        uint256 rewardBudget,
        uint32 reputationDecay
    ) external onlyRole(OPERATOR_ROLE) returns (uint256 roundId) {
        if (_globalModelHash == bytes32(0)) revert RoundsNoGenesisModel();
        if (_roundCount != 0 && _rounds[_roundCount].state != RoundState.Finalized) {
            revert RoundsPreviousRoundNotFinalized(_roundCount, _rounds[_roundCount].state);
        }
        if (deadline <= block.timestamp) revert RoundsDeadlineNotInFuture(deadline, block.timestamp);
        if (reputationDecay > PPM_ONE) revert RoundsDecayOutOfRange(reputationDecay);
        _requireRef(ruleHash, ruleCid);

        roundId = ++_roundCount;
        Round storage r = _rounds[roundId];
        r.state = RoundState.Open;
        r.openedAt = uint64(block.timestamp);
        r.deadline = deadline;
        r.reputationDecay = reputationDecay;
        r.baseModelHash = _globalModelHash;
        r.ruleHash = ruleHash;
        r.rewardBudget = rewardBudget;
        emit RoundOpened(roundId, _globalModelHash, ruleHash, deadline, rewardBudget, reputationDecay, ruleCid);
    }

    /// @notice Stop accepting commitments before the deadline (e.g. every participant has committed).
    function closeRound(uint256 roundId) external onlyRole(OPERATOR_ROLE) {
        Round storage r = _existingRound(roundId);
        if (r.state != RoundState.Open) revert RoundsRoundNotOpen(roundId, r.state);
        r.state = RoundState.Closed;
        emit RoundClosed(roundId, uint64(block.timestamp), r.submissions);
    }

    // --------------------------------------------------------------- participant

    /// @notice Commit the caller's update for `roundId`.
    function commitUpdate(uint256 roundId, bytes32 contentHash, string calldata cid) external {
        _commit(roundId, msg.sender, contentHash, cid);
    }

    /// @notice Relay a commitment signed by `participant` (EIP-712 `Commitment`). The domain binds the
    ///         chain id and this contract; the struct binds the round; one commitment per round binds the rest,
    ///         so a signature cannot be replayed on another chain, contract or round, or twice.
    function commitUpdateSigned(
        address participant,
        uint256 roundId,
        bytes32 contentHash,
        string calldata cid,
        bytes calldata signature
    ) external {
        (address recovered, ECDSA.RecoverError err,) =
            ECDSA.tryRecover(commitmentDigest(roundId, contentHash, cid), signature);
        if (err != ECDSA.RecoverError.NoError || recovered != participant) {
            revert RoundsInvalidSignature(participant, recovered);
        }
        _commit(roundId, participant, contentHash, cid);
    }

    // ---------------------------------------------------------------- aggregator

    /// @notice Finalize `roundId`: record the new global model and the verdict on every committed update,
    ///         then update reputation and mint rewards by the formulas in the contract header.
    /// @param participants every committer of the round, strictly ascending by address
    /// @param scores contribution scores in 1e-6 units, in [-1e6, 1e6]
    /// @param statuses 0 = accepted; any other value is a rejection reason code
    function finalizeRound(
        uint256 roundId,
        bytes32 newModelHash,
        string calldata newModelCid,
        address[] calldata participants,
        int32[] calldata scores,
        uint8[] calldata statuses
    ) external onlyRole(AGGREGATOR_ROLE) {
        Round storage r = _existingRound(roundId);
        if (r.state == RoundState.Finalized) revert RoundsAlreadyFinalized(roundId, r.newModelHash);
        if (r.state == RoundState.Open && block.timestamp <= r.deadline) {
            revert RoundsSubmissionsStillOpen(roundId, r.deadline, block.timestamp);
        }
        _requireRef(newModelHash, newModelCid);
        (uint256[] memory weights, uint256 total, uint32 accepted) =
            _checkVerdicts(roundId, r.submissions, participants, scores, statuses);

        uint256[] memory rewards = new uint256[](participants.length);
        uint256 minted;
        for (uint256 i = 0; i < participants.length; ++i) {
            if (total != 0) rewards[i] = (r.rewardBudget * weights[i]) / total;
            minted += rewards[i];
        }

        // Effects: the round is final before any external call.
        r.state = RoundState.Finalized;
        r.newModelHash = newModelHash;
        r.accepted = accepted;
        r.minted = minted;
        _globalModelHash = newModelHash;
        _globalModelCid = newModelCid;
        emit RoundFinalized(roundId, newModelHash, r.baseModelHash, newModelCid, accepted, minted);

        // Interactions, only with the registry and token this contract was deployed with (no callbacks).
        uint32 decay = r.reputationDecay;
        for (uint256 i = 0; i < participants.length; ++i) {
            uint32 reputation = _nextReputation(registry.reputationOf(participants[i]), weights[i], decay);
            registry.setReputation(participants[i], roundId, reputation);
            if (rewards[i] != 0) token.mint(participants[i], rewards[i]);
            emit ContributionScored(roundId, participants[i], statuses[i], scores[i], rewards[i], reputation);
        }
    }

    // --------------------------------------------------------------------- views

    function roundCount() external view returns (uint256) {
        return _roundCount;
    }

    function getRound(uint256 roundId) external view returns (Round memory) {
        return _existingRound(roundId);
    }

    /// @notice The content hash `participant` committed for `roundId`, or zero.
    function commitmentOf(uint256 roundId, address participant) external view returns (bytes32) {
        return _commitments[roundId][participant];
    }

    function globalModel() external view returns (bytes32 modelHash, string memory cid) {
        return (_globalModelHash, _globalModelCid);
    }

    /// @notice The EIP-712 digest a participant signs to commit `contentHash`/`cid` to `roundId`.
    function commitmentDigest(uint256 roundId, bytes32 contentHash, string calldata cid) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(COMMITMENT_TYPEHASH, roundId, contentHash, keccak256(bytes(cid)))));
    }

    // ------------------------------------------------------------------ internal

    function _commit(uint256 roundId, address participant, bytes32 contentHash, string calldata cid) private {
        Round storage r = _existingRound(roundId);
        if (r.state != RoundState.Open) revert RoundsRoundNotOpen(roundId, r.state);
        if (block.timestamp > r.deadline) revert RoundsDeadlinePassed(roundId, r.deadline, block.timestamp);
        ParticipantRegistry.Status status = registry.statusOf(participant);
        if (status != ParticipantRegistry.Status.Active) revert RoundsParticipantNotActive(participant, status);
        bytes32 existing = _commitments[roundId][participant];
        if (existing != bytes32(0)) revert RoundsDuplicateCommitment(roundId, participant, existing);
        _requireRef(contentHash, cid);
        _commitments[roundId][participant] = contentHash;
        r.submissions += 1;
        emit UpdateCommitted(roundId, participant, contentHash, cid, msg.sender);
    }

    function _checkVerdicts(
        uint256 roundId,
        uint32 submissions,
        address[] calldata participants,
        int32[] calldata scores,
        uint8[] calldata statuses
    ) private view returns (uint256[] memory weights, uint256 total, uint32 accepted) {
        uint256 n = participants.length;
        if (scores.length != n || statuses.length != n) revert RoundsLengthMismatch(n, scores.length, statuses.length);
        if (n != submissions) revert RoundsSubmissionCountMismatch(roundId, submissions, n);
        weights = new uint256[](n);
        for (uint256 i = 0; i < n; ++i) {
            address p = participants[i];
            if (i != 0 && p <= participants[i - 1]) revert RoundsParticipantsNotSorted(i, participants[i - 1], p);
            if (_commitments[roundId][p] == bytes32(0)) revert RoundsNotCommitted(roundId, p);
            if (scores[i] < -SCORE_ONE || scores[i] > SCORE_ONE) revert RoundsScoreOutOfRange(p, scores[i]);
            if (statuses[i] > MAX_STATUS) revert RoundsStatusOutOfRange(p, statuses[i]);
            if (statuses[i] == STATUS_ACCEPTED) {
                accepted += 1;
                // Safe: scores[i] is in (0, SCORE_ONE] here, so the cast cannot wrap.
                if (scores[i] > 0) weights[i] = uint256(uint32(scores[i]));
                total += weights[i];
            }
        }
    }

    function _nextReputation(uint32 previous, uint256 weight, uint32 decay) private pure returns (uint32) {
        // previous, weight <= 1e6 and decay <= 1e6, so the sum is <= 1e12 and the result <= 1e6.
        return uint32((uint256(previous) * decay + weight * (PPM_ONE - decay)) / PPM_ONE);
    }

    function _existingRound(uint256 roundId) private view returns (Round storage r) {
        if (roundId == 0 || roundId > _roundCount) revert RoundsUnknownRound(roundId, _roundCount);
        return _rounds[roundId];
    }

    function _requireRef(bytes32 contentHash, string calldata cid) private pure {
        if (contentHash == bytes32(0)) revert RoundsEmptyHash();
        if (bytes(cid).length == 0) revert RoundsEmptyCid();
    }
}
