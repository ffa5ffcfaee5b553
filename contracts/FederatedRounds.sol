// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
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
///
/// At scale (docs/merkle-rounds.md) a round costs gas that does not grow with its participants:
/// * commitments: besides the per-participant commit, a relayer posts one Merkle root per batch of EIP-712 signed
///   commitments plus the signed list's blob (`commitBatch`). The contract cannot check the signatures it never
///   sees: the auditor checks every one against the list, and the list against the root. A participant left out
///   of a batch can still commit by its own transaction until the round closes.
/// * results: `finalizeRoundWithResults` commits one Merkle root over the round's result list (roundId,
///   participant, status, score, reward, reputation after) plus the list's blob, and the total of its rewards,
///   which must not exceed the budget. Leaves follow OpenZeppelin's StandardMerkleTree:
///   keccak256(bytes.concat(keccak256(abi.encode(values)))), pairs hashed sorted.
/// * claims: each participant (or anyone for it) proves its leaf once per round and is minted its reward; its
///   registry reputation becomes the one of the newest round it has claimed. Minted rewards never exceed the
///   committed total: the contract counts what is claimed.
///
/// Stake (ParticipantRegistry): committing by transaction needs an identity whose stake is at least the registry's
/// `minStake` and that has no withdrawal pending, and records the round in the registry (the stake cannot leave
/// before the round is final plus the withdrawal delay). A verdict whose status is in SLASHABLE_MASK (LOW_SCORE,
/// NORM_OUTLIER, HASH_MISMATCH, BAD_FORMAT, WRONG_SHAPE, NON_FINITE; not UNAVAILABLE, which may be the store's fault,
/// nor FREE_RIDE, which earns nothing anyway) burns the registry's `slashPpm` of the identity's current stake:
/// `finalizeRound` slashes each such verdict itself; for a Merkle-finalized round anyone proves a slashable result
/// leaf with `slash`, once per (round, participant).
contract FederatedRounds is AccessControl, EIP712 {
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    bytes32 public constant AGGREGATOR_ROLE = keccak256("AGGREGATOR_ROLE");
    bytes32 public constant RELAYER_ROLE = keccak256("RELAYER_ROLE");
    bytes32 public constant COMMITMENT_TYPEHASH = keccak256("Commitment(uint256 roundId,bytes32 contentHash,string cid)");

    int32 public constant SCORE_ONE = 1_000_000;
    uint32 public constant PPM_ONE = 1_000_000;
    uint8 public constant STATUS_ACCEPTED = 0;
    uint8 public constant MAX_STATUS = 15;
    /// Bounds what an aggregator must fetch for one batch; a relayer posts more batches for more participants.
    uint32 public constant MAX_BATCH_ENTRIES = 10_000;
    /// Bit s set: status s is slashable (1 LOW_SCORE, 2 NORM_OUTLIER, 4 HASH_MISMATCH, 5 BAD_FORMAT,
    /// 6 WRONG_SHAPE, 7 NON_FINITE), matching trainer/incentives.py SLASHABLE.
    uint256 public constant SLASHABLE_MASK = (1 << 1) | (1 << 2) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7);

    enum RoundState {
        None,
        Open,
        Closed,
        Finalized
    }

    /// What `finalizeRoundWithResults` committed and how much of it has been claimed.
    struct Results {
        bytes32 root;
        uint256 total;
        uint256 claimed;
    }

    /// One leaf of a result list; `proof` proves it under the round's results root.
    struct Claim {
        uint256 roundId;
        uint8 status;
        int32 score;
        uint256 reward;
        uint32 reputation;
        bytes32[] proof;
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
    mapping(uint256 roundId => bytes32[] roots) private _batchRoots;
    mapping(uint256 roundId => Results) private _results;
    /// Claimed flags, one bit per round: word roundId / 256 of a participant's bitmap, bit roundId % 256.
    mapping(address participant => mapping(uint256 word => uint256 bits)) private _claimedBits;
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
    error RoundsEmptyRoot();
    error RoundsBatchSizeOutOfRange(uint32 entries, uint32 maxEntries);
    error RoundsRewardsExceedBudget(uint256 roundId, uint256 total, uint256 budget);
    error RoundsResultsMissDirectCommitments(uint256 roundId, uint32 directCommitments, uint32 entries);
    error RoundsResultsNotCommitted(uint256 roundId, RoundState state);
    error RoundsAlreadyClaimed(uint256 roundId, address participant);
    error RoundsInvalidProof(uint256 roundId, address participant, bytes32 leaf);
    error RoundsClaimsExceedTotal(uint256 roundId, uint256 claimed, uint256 total);
    error RoundsNoClaims();
    error RoundsAcceptedExceedEntries(uint256 roundId, uint32 accepted, uint32 entries);
    error RoundsUnknownBatch(uint256 roundId, uint256 batchIndex, uint256 batchCount);
    error RoundsNotSlashable(uint256 roundId, address participant, uint8 status);

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
    event CommitmentBatchPosted(
        uint256 indexed roundId,
        uint256 indexed batchIndex,
        bytes32 indexed root,
        bytes32 listHash,
        string listCid,
        uint32 entries,
        address relayer
    );
    event RoundResultsCommitted(
        uint256 indexed roundId, bytes32 indexed root, bytes32 listHash, string listCid, uint32 entries, uint256 total
    );
    event RewardClaimed(
        uint256 indexed roundId, address indexed participant, uint8 indexed status, int32 score, uint256 reward, uint32 reputation
    );
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
        registry.markRoundOpened(roundId); // the registry, deployed with this contract: no callback
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
        // The third value (the bad length or s) is not needed: the error code and the recovered address decide.
        // slither-disable-next-line unused-return
        (address recovered, ECDSA.RecoverError err,) =
            ECDSA.tryRecover(commitmentDigest(roundId, contentHash, cid), signature);
        if (err != ECDSA.RecoverError.NoError || recovered != participant) {
            revert RoundsInvalidSignature(participant, recovered);
        }
        _commit(roundId, participant, contentHash, cid);
    }

    /// @notice Post one batch of EIP-712 signed commitments collected off-chain: the Merkle root over its leaves
    ///         (roundId, participant, contentHash, cid) and the signed list's blob (sha256 + CID). The list holds
    ///         each commitment with its signature; auditors check them, since the contract never sees them.
    function commitBatch(uint256 roundId, bytes32 root, uint32 entries, bytes32 listHash, string calldata listCid)
        external
        onlyRole(RELAYER_ROLE)
        returns (uint256 batchIndex)
    {
        Round storage r = _existingRound(roundId);
        if (r.state != RoundState.Open) revert RoundsRoundNotOpen(roundId, r.state);
        if (block.timestamp > r.deadline) revert RoundsDeadlinePassed(roundId, r.deadline, block.timestamp);
        if (root == bytes32(0)) revert RoundsEmptyRoot();
        if (entries == 0 || entries > MAX_BATCH_ENTRIES) revert RoundsBatchSizeOutOfRange(entries, MAX_BATCH_ENTRIES);
        _requireRef(listHash, listCid);
        batchIndex = _batchRoots[roundId].length;
        _batchRoots[roundId].push(root);
        emit CommitmentBatchPosted(roundId, batchIndex, root, listHash, listCid, entries, msg.sender);
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
        uint256 minted = 0;
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
        registry.markRoundFinalized(roundId);
        uint32 decay = r.reputationDecay;
        for (uint256 i = 0; i < participants.length; ++i) {
            uint32 reputation = _nextReputation(registry.reputationOf(participants[i]), weights[i], decay);
            registry.setReputation(participants[i], roundId, reputation);
            if (rewards[i] != 0) token.mint(participants[i], rewards[i]);
            // The registry's return value is in its StakeSlashed event; nothing here depends on it.
            // slither-disable-next-line unused-return
            if (isSlashable(statuses[i])) registry.slash(participants[i], roundId, statuses[i]);
            emit ContributionScored(roundId, participants[i], statuses[i], scores[i], rewards[i], reputation);
        }
    }

    /// @notice Finalize `roundId` with one Merkle root over its result list instead of per-participant writes:
    ///         gas does not grow with participants. Rewards and reputation are claimed by proof (`claim`).
    /// @param entries how many results the list holds; it must cover at least the direct commitments
    /// @param accepted how many of them are accepted
    /// @param total the sum of the list's rewards, at most the round's budget; claims can never mint more
    function finalizeRoundWithResults(
        uint256 roundId,
        bytes32 newModelHash,
        string calldata newModelCid,
        bytes32 resultsRoot,
        bytes32 listHash,
        string calldata listCid,
        uint32 entries,
        uint32 accepted,
        uint256 total
    ) external onlyRole(AGGREGATOR_ROLE) {
        Round storage r = _existingRound(roundId);
        if (r.state == RoundState.Finalized) revert RoundsAlreadyFinalized(roundId, r.newModelHash);
        if (r.state == RoundState.Open && block.timestamp <= r.deadline) {
            revert RoundsSubmissionsStillOpen(roundId, r.deadline, block.timestamp);
        }
        _requireRef(newModelHash, newModelCid);
        _requireRef(listHash, listCid);
        if (resultsRoot == bytes32(0)) revert RoundsEmptyRoot();
        if (total > r.rewardBudget) revert RoundsRewardsExceedBudget(roundId, total, r.rewardBudget);
        if (entries < r.submissions) revert RoundsResultsMissDirectCommitments(roundId, r.submissions, entries);
        if (accepted > entries) revert RoundsAcceptedExceedEntries(roundId, accepted, entries);

        r.state = RoundState.Finalized;
        r.newModelHash = newModelHash;
        r.accepted = accepted;
        _results[roundId] = Results({root: resultsRoot, total: total, claimed: 0});
        _globalModelHash = newModelHash;
        _globalModelCid = newModelCid;
        emit RoundResultsCommitted(roundId, resultsRoot, listHash, listCid, entries, total);
        emit RoundFinalized(roundId, newModelHash, r.baseModelHash, newModelCid, accepted, 0);
        registry.markRoundFinalized(roundId); // the registry, deployed with this contract: no callback
    }

    // ---------------------------------------------------------------- slashing

    /// @notice Slash `participant` for its result in Merkle-finalized `roundId`: anyone proves the leaf (the same
    ///         leaf `claim` takes) under the committed results root; its status must be slashable. Once per
    ///         (round, participant): the registry refuses a second slash.
    function slash(
        uint256 roundId,
        address participant,
        uint8 status,
        int32 score,
        uint256 reward,
        uint32 reputation,
        bytes32[] calldata proof
    ) external returns (uint256 amount) {
        Round storage r = _existingRound(roundId);
        bytes32 root = _results[roundId].root;
        if (root == bytes32(0)) revert RoundsResultsNotCommitted(roundId, r.state);
        bytes32 leaf = resultLeaf(roundId, participant, status, score, reward, reputation);
        if (!MerkleProof.verifyCalldata(proof, root, leaf)) revert RoundsInvalidProof(roundId, participant, leaf);
        if (!isSlashable(status)) revert RoundsNotSlashable(roundId, participant, status);
        amount = registry.slash(participant, roundId, status);
    }

    /// @notice Whether a verdict with `status` burns part of the stake (see SLASHABLE_MASK).
    function isSlashable(uint8 status) public pure returns (bool) {
        return (SLASHABLE_MASK >> status) & 1 == 1;
    }

    // ---------------------------------------------------------------- claims

    /// @notice Claim `participant`'s results of one or more Merkle-finalized rounds: each leaf is proven against
    ///         its round's results root, once per participant and round. The rewards are minted to `participant`
    ///         (whoever sends the transaction), and its registry reputation becomes the one proven for the newest
    ///         round claimed, if that round is newer than the one its reputation comes from.
    function claim(address participant, Claim[] calldata claims) external {
        if (claims.length == 0) revert RoundsNoClaims();
        uint256 reward = 0;
        uint256 newestRound = 0;
        uint32 newestReputation = 0;
        for (uint256 i = 0; i < claims.length; ++i) {
            Claim calldata c = claims[i];
            Round storage r = _existingRound(c.roundId);
            Results storage res = _results[c.roundId];
            if (res.root == bytes32(0)) revert RoundsResultsNotCommitted(c.roundId, r.state);
            uint256 bit = 1 << (c.roundId & 255);
            mapping(uint256 => uint256) storage bits = _claimedBits[participant];
            if (bits[c.roundId >> 8] & bit != 0) revert RoundsAlreadyClaimed(c.roundId, participant);
            bytes32 leaf = resultLeaf(c.roundId, participant, c.status, c.score, c.reward, c.reputation);
            if (!MerkleProof.verifyCalldata(c.proof, res.root, leaf)) {
                revert RoundsInvalidProof(c.roundId, participant, leaf);
            }
            bits[c.roundId >> 8] |= bit;
            uint256 claimed = res.claimed + c.reward;
            if (claimed > res.total) revert RoundsClaimsExceedTotal(c.roundId, claimed, res.total);
            res.claimed = claimed;
            r.minted += c.reward;
            reward += c.reward;
            if (c.roundId > newestRound) {
                newestRound = c.roundId;
                newestReputation = c.reputation;
            }
            emit RewardClaimed(c.roundId, participant, c.status, c.score, c.reward, c.reputation);
        }
        // Interactions last, only with the registry and token this contract was deployed with (no callbacks).
        if (newestRound > registry.reputationRoundOf(participant)) {
            registry.setReputation(participant, newestRound, newestReputation);
        }
        if (reward != 0) token.mint(participant, reward);
    }

    // --------------------------------------------------------------------- views

    /// @notice The OpenZeppelin-standard leaf of one result: keccak256(bytes.concat(keccak256(abi.encode(...)))).
    function resultLeaf(uint256 roundId, address participant, uint8 status, int32 score, uint256 reward, uint32 reputation)
        public
        pure
        returns (bytes32)
    {
        return keccak256(bytes.concat(keccak256(abi.encode(roundId, participant, status, score, reward, reputation))));
    }

    /// @notice The leaf of one batched commitment (roundId, participant, contentHash, cid).
    function commitmentLeaf(uint256 roundId, address participant, bytes32 contentHash, string calldata cid)
        public
        pure
        returns (bytes32)
    {
        return keccak256(bytes.concat(keccak256(abi.encode(roundId, participant, contentHash, cid))));
    }

    /// @notice Whether a relayer's batch `batchIndex` of `roundId` includes this commitment (a participant's receipt).
    function isInBatch(
        uint256 roundId,
        uint256 batchIndex,
        address participant,
        bytes32 contentHash,
        string calldata cid,
        bytes32[] calldata proof
    ) external view returns (bool) {
        bytes32[] storage roots = _batchRoots[roundId];
        if (batchIndex >= roots.length) return false;
        return MerkleProof.verifyCalldata(proof, roots[batchIndex], commitmentLeaf(roundId, participant, contentHash, cid));
    }

    function batchCount(uint256 roundId) external view returns (uint256) {
        return _batchRoots[roundId].length;
    }

    function batchRoot(uint256 roundId, uint256 batchIndex) external view returns (bytes32) {
        bytes32[] storage roots = _batchRoots[roundId];
        if (batchIndex >= roots.length) revert RoundsUnknownBatch(roundId, batchIndex, roots.length);
        return roots[batchIndex];
    }

    /// @notice The committed results root, reward total and claimed amount of a Merkle-finalized round (zeros otherwise).
    function resultsOf(uint256 roundId) external view returns (Results memory) {
        return _results[roundId];
    }

    function isClaimed(uint256 roundId, address participant) external view returns (bool) {
        return _claimedBits[participant][roundId >> 8] & (1 << (roundId & 255)) != 0;
    }

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
        // Last, with the registry this contract was deployed with (no callback): reverts unless the identity's
        // stake may commit, and keeps the stake in until this round settles.
        registry.lockForRound(participant, roundId);
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
