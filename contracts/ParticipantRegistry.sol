// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title ParticipantRegistry
/// @notice Wallet registration against a stake (by own transaction, or by an EIP-712 signature that anyone may relay
///         and pay the stake for, e.g. a consortium sponsor), operator suspension, on-chain reputation, slashing and
///         delayed withdrawal of the stake.
///
/// Admission (a constructor argument, so fixed per deployment and visible to every participant): an open registry
/// (`admissionRequired` false) lets any wallet register against its stake; a consortium's registry admits only the
/// accounts an OPERATOR_ROLE holder has admitted (`admit`, once per account), on either registration path. Stake
/// makes every identity cost one stake, but cannot stop one party from registering many: a data set split across k
/// wallets is k honest-looking participants (docs/robustness/v5/sybil_split/). Admission is what vets identities.
///
/// Stake (native ether; FED is what participants earn, so new participants hold none):
/// * every path to an Active identity locks at least `minStake` for it (`register`, `registerFor`, both payable);
///   anyone may top an identity up (`depositStake`). Sybil copies cost one stake each.
/// * SLASHER_ROLE (the round manager) burns `stake * slashPpm / 1e6` of an identity's current stake, once per
///   (round, identity), for each verdict the round manager's published rule calls slashable. Burned ether stays in
///   this contract forever (`totalBurned`); nobody can withdraw it.
/// * an identity whose stake is below `minStake` (slashed, or withdrawn) cannot commit until it is topped up.
/// * `requestWithdrawal` stops the identity committing; `withdraw` returns the whole remaining stake once
///   `withdrawalDelay` has passed since the request AND since the finalization of the last round the identity
///   committed to, or that was open when it asked (so a round's slashes, including Merkle rounds' slash-by-proof of
///   relayer-batched commitments, can land before the stake leaves).
/// @dev Reputation is fixed-point with REPUTATION_ONE = 1.0. Only REPUTATION_WRITER_ROLE
///      (the round manager) writes it: while finalizing a round, or when a participant claims a Merkle-committed
///      round result. Each write names its round and must be newer than the last one, so an old round's result
///      claimed late cannot overwrite a newer reputation.
contract ParticipantRegistry is AccessControl, EIP712, ReentrancyGuard {
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    bytes32 public constant REPUTATION_WRITER_ROLE = keccak256("REPUTATION_WRITER_ROLE");
    bytes32 public constant SLASHER_ROLE = keccak256("SLASHER_ROLE");

    bytes32 public constant REGISTRATION_TYPEHASH = keccak256("Registration(address account,uint256 deadline)");
    uint32 public constant REPUTATION_ONE = 1_000_000;
    uint32 public constant INITIAL_REPUTATION = 500_000;
    uint32 public constant PPM_ONE = 1_000_000;

    enum Status {
        None,
        Active,
        Suspended
    }

    struct Participant {
        Status status;
        uint32 reputation;
        uint64 registeredAt;
        uint64 reputationRound; // the round whose result set `reputation` (0: the initial value)
    }

    /// One identity's stake. Amounts fit 128 bits (the ether supply is far below 2**128 wei).
    struct Stake {
        uint128 amount; // what the identity can still lose or withdraw
        uint128 slashed; // burned so far
        uint64 withdrawalRequestedAt; // 0: no withdrawal pending
        uint64 lastCommitRound; // the newest round it committed to by transaction (0: none)
    }

    /// The smallest stake with which an identity may register or commit (wei).
    uint256 public immutable minStake;
    /// Share of the current stake one slashable verdict burns, in 1e-6 units.
    uint32 public immutable slashPpm;
    /// Seconds between a withdrawal request (and the finalization of the last round committed to) and `withdraw`.
    uint64 public immutable withdrawalDelay;
    /// Only accounts an operator admitted may register (see the contract header).
    bool public immutable admissionRequired;

    /// Not enumerable on-chain (an array would cost every registration ~40k gas): enumerate through the
    /// ParticipantRegistered events.
    mapping(address account => Participant) private _participants;
    uint256 private _count;
    mapping(address account => Stake) private _stakes;
    /// Slashed flags, one bit per round: word roundId / 256 of an identity's bitmap, bit roundId % 256.
    mapping(address account => mapping(uint256 word => uint256 bits)) private _slashedBits;
    /// When the round manager reported each round finalized (0: not yet).
    mapping(uint256 roundId => uint64 timestamp) private _finalizedAt;
    uint256 private _totalStaked;
    /// The newest round the round manager opened (it is open until `_finalizedAt` says otherwise).
    uint256 private _openedRound;
    uint256 private _totalBurned;
    /// Accounts an operator admitted (only consulted when `admissionRequired`).
    mapping(address account => bool) private _admitted;

    error RegistryAlreadyRegistered(address account);
    error RegistryNotRegistered(address account);
    error RegistryNotSuspended(address account, Status status);
    error RegistryAlreadySuspended(address account);
    error RegistryReputationOutOfRange(address account, uint256 reputation);
    error RegistryInvalidSignature(address account, address recovered);
    error RegistrySignatureExpired(address account, uint256 deadline, uint256 timestamp);
    error RegistryStaleReputation(address account, uint256 roundId, uint256 latestRoundId);
    error RegistrySlashOutOfRange(uint256 slashPpm);
    error RegistryStakeTooLow(address account, uint256 stake, uint256 minStake);
    error RegistryZeroDeposit(address account);
    error RegistryWithdrawalPending(address account, uint256 requestedAt);
    error RegistryWithdrawalNotRequested(address account);
    error RegistryNothingToWithdraw(address account);
    error RegistryWithdrawalLocked(address account, uint256 unlockTime, uint256 timestamp);
    error RegistryRoundNotSettled(address account, uint256 roundId);
    error RegistryAlreadySlashed(address account, uint256 roundId);
    error RegistryTransferFailed(address account, uint256 amount);
    error RegistryNotAdmitted(address account);
    error RegistryAlreadyAdmitted(address account);
    error RegistryAdmissionNotRequired(address account);

    event ParticipantRegistered(address indexed account, uint256 reputation);
    event ParticipantSuspended(address indexed account, address indexed operator, bytes32 indexed reason);
    event ParticipantReinstated(address indexed account, address indexed operator);
    event ReputationUpdated(address indexed account, uint256 indexed roundId, uint256 previous, uint256 current);
    event StakeDeposited(address indexed account, address indexed from, uint256 amount, uint256 stake);
    event StakeSlashed(
        address indexed account, uint256 indexed roundId, uint8 indexed status, uint256 stakeBefore, uint256 amount
    );
    event WithdrawalRequested(address indexed account, uint256 stake, uint256 requestedAt);
    event StakeWithdrawn(address indexed account, uint256 amount);
    event RoundSettlementStarted(uint256 indexed roundId, uint256 finalizedAt);
    event ParticipantAdmitted(address indexed account, address indexed operator);

    /// @param minStake_ wei an identity must lock to register and to commit
    /// @param slashPpm_ share of the current stake a slashable verdict burns (1e-6 units, at most 1e6)
    /// @param withdrawalDelay_ seconds a withdrawal waits (see the contract header)
    /// @param admissionRequired_ only accounts an operator admitted may register (see the contract header)
    constructor(address admin, uint256 minStake_, uint32 slashPpm_, uint64 withdrawalDelay_, bool admissionRequired_)
        EIP712("FedLedger Registry", "1")
    {
        if (slashPpm_ > PPM_ONE) revert RegistrySlashOutOfRange(slashPpm_);
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        minStake = minStake_;
        slashPpm = slashPpm_;
        withdrawalDelay = withdrawalDelay_;
        admissionRequired = admissionRequired_;
    }

    /// @notice Admit `account` to register (a registry with `admissionRequired` only). Admission is once per account
    ///         and stays: an admitted participant is removed by suspension, as any other.
    function admit(address account) external onlyRole(OPERATOR_ROLE) {
        if (!admissionRequired) revert RegistryAdmissionNotRequired(account);
        if (_admitted[account]) revert RegistryAlreadyAdmitted(account);
        _admitted[account] = true;
        emit ParticipantAdmitted(account, msg.sender);
    }

    /// @notice Whether `account` may register as far as admission goes (always, in an open registry).
    function isAdmitted(address account) external view returns (bool) {
        return !admissionRequired || _admitted[account];
    }

    /// @notice Register the calling wallet as a participant, staking `msg.value` (at least `minStake`).
    function register() external payable {
        _register(msg.sender);
    }

    /// @notice Register `account`, which signed `Registration(account, deadline)` (EIP-712). The signature is
    ///         the answer to the API's registration challenge; it expires at `deadline` and cannot register twice.
    ///         The sender pays the stake (`msg.value`, at least `minStake`), credited to `account`.
    function registerFor(address account, uint256 deadline, bytes calldata signature) external payable {
        if (block.timestamp > deadline) revert RegistrySignatureExpired(account, deadline, block.timestamp);
        // The third value (the bad length or s) is not needed: the error code and the recovered address decide.
        // slither-disable-next-line unused-return
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecover(registrationDigest(account, deadline), signature);
        if (err != ECDSA.RecoverError.NoError || recovered != account) revert RegistryInvalidSignature(account, recovered);
        _register(account);
    }

    /// @notice The EIP-712 digest `account` signs to register with a relayer.
    function registrationDigest(address account, uint256 deadline) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(REGISTRATION_TYPEHASH, account, deadline)));
    }

    function _register(address account) private {
        Participant storage p = _participants[account];
        if (p.status != Status.None) revert RegistryAlreadyRegistered(account);
        if (admissionRequired && !_admitted[account]) revert RegistryNotAdmitted(account);
        if (msg.value < minStake) revert RegistryStakeTooLow(account, msg.value, minStake);
        p.status = Status.Active;
        p.reputation = INITIAL_REPUTATION;
        p.registeredAt = uint64(block.timestamp);
        unchecked {
            _count += 1; // cannot overflow: one per address
        }
        emit ParticipantRegistered(account, INITIAL_REPUTATION);
        _deposit(account);
    }

    // --------------------------------------------------------------------- stake

    /// @notice Add `msg.value` to the stake of registered `account` (anyone may pay, e.g. to top up a slashed
    ///         identity). Not while a withdrawal is pending.
    function depositStake(address account) external payable {
        // An enum compared with a constant (slither taints it through the withdrawal timestamps): no time or balance.
        // slither-disable-next-line incorrect-equality
        if (_participants[account].status == Status.None) revert RegistryNotRegistered(account);
        if (msg.value == 0) revert RegistryZeroDeposit(account);
        Stake storage s = _stakes[account];
        if (s.withdrawalRequestedAt != 0) revert RegistryWithdrawalPending(account, s.withdrawalRequestedAt);
        _deposit(account);
    }

    function _deposit(address account) private {
        Stake storage s = _stakes[account];
        uint256 amount = uint256(s.amount) + msg.value;
        s.amount = uint128(amount); // ether in existence is below 2**128 wei, so the sum fits
        _totalStaked += msg.value;
        emit StakeDeposited(account, msg.sender, msg.value, amount);
    }

    /// @notice Announce a withdrawal of the caller's whole stake. From now on it cannot commit to rounds.
    function requestWithdrawal() external {
        address account = msg.sender;
        // An enum compared with a constant (slither taints it through the withdrawal timestamps): no time or balance.
        // slither-disable-next-line incorrect-equality
        if (_participants[account].status == Status.None) revert RegistryNotRegistered(account);
        Stake storage s = _stakes[account];
        if (s.withdrawalRequestedAt != 0) revert RegistryWithdrawalPending(account, s.withdrawalRequestedAt);
        if (s.amount == 0) revert RegistryNothingToWithdraw(account);
        // A request while a round is open waits for that round too: a relayer's batch (never checked on chain) may
        // hold this identity's commitment to it.
        uint256 open = _openedRound;
        // 0 means not finalized: a flag, not a time compared with another (see docs/security.md).
        // slither-disable-next-line incorrect-equality,timestamp
        if (open > s.lastCommitRound && _finalizedAt[open] == 0) s.lastCommitRound = uint64(open);
        s.withdrawalRequestedAt = uint64(block.timestamp);
        emit WithdrawalRequested(account, s.amount, block.timestamp);
    }

    /// @notice When the caller's pending withdrawal unlocks (0 if none is pending or its last round is not final).
    function withdrawalUnlockTime(address account) public view returns (uint256) {
        Stake storage s = _stakes[account];
        // 0 means none yet: a flag, not a time compared with another (see docs/security.md).
        // slither-disable-next-line incorrect-equality,timestamp
        if (s.withdrawalRequestedAt == 0) return 0;
        uint256 start = s.withdrawalRequestedAt;
        if (s.lastCommitRound != 0) {
            uint256 finalized = _finalizedAt[s.lastCommitRound];
            // 0 means none yet: a flag, not a time compared with another (see docs/security.md).
            // slither-disable-next-line incorrect-equality,timestamp
            if (finalized == 0) return 0;
            if (finalized > start) start = finalized;
        }
        return start + withdrawalDelay;
    }

    /// @notice Withdraw the caller's whole remaining stake, `withdrawalDelay` after its request and after the
    ///         finalization of the last round it committed to. The identity stays registered (reputation kept) but
    ///         cannot commit until it stakes `minStake` again.
    function withdraw() external nonReentrant {
        address account = msg.sender;
        Stake storage s = _stakes[account];
        if (s.withdrawalRequestedAt == 0) revert RegistryWithdrawalNotRequested(account);
        if (s.lastCommitRound != 0 && _finalizedAt[s.lastCommitRound] == 0) {
            revert RegistryRoundNotSettled(account, s.lastCommitRound);
        }
        uint256 unlock = withdrawalUnlockTime(account);
        // A delay of days: the few seconds a block producer may shift a timestamp do not matter.
        // slither-disable-next-line timestamp
        if (block.timestamp < unlock) revert RegistryWithdrawalLocked(account, unlock, block.timestamp);
        uint256 amount = s.amount;
        // Effects before the transfer (and nonReentrant besides): a re-entered withdraw finds nothing pending.
        s.amount = 0;
        s.withdrawalRequestedAt = 0;
        _totalStaked -= amount;
        emit StakeWithdrawn(account, amount);
        if (amount != 0) {
            // The one external call, to the identity itself, last. It gets all gas: a contract wallet may need it.
            (bool ok,) = payable(account).call{value: amount}("");
            if (!ok) revert RegistryTransferFailed(account, amount);
        }
    }

    /// @notice Round manager: `account` commits to `roundId` by transaction. Reverts unless it may (withdrawal
    ///         pending, stake below `minStake`); records the round so that the stake cannot leave before it settles.
    function lockForRound(address account, uint256 roundId) external onlyRole(SLASHER_ROLE) {
        Stake storage s = _stakes[account];
        if (s.withdrawalRequestedAt != 0) revert RegistryWithdrawalPending(account, s.withdrawalRequestedAt);
        if (s.amount < minStake) revert RegistryStakeTooLow(account, s.amount, minStake);
        if (roundId > s.lastCommitRound) s.lastCommitRound = uint64(roundId); // round ids never reach 2**64
    }

    /// @notice Round manager: `roundId` is open; a withdrawal requested before it is final waits for it.
    function markRoundOpened(uint256 roundId) external onlyRole(SLASHER_ROLE) {
        _openedRound = roundId;
    }

    /// @notice Round manager: `roundId` is final; withdrawals waiting on it start their delay now.
    function markRoundFinalized(uint256 roundId) external onlyRole(SLASHER_ROLE) {
        if (_finalizedAt[roundId] == 0) {
            _finalizedAt[roundId] = uint64(block.timestamp);
            emit RoundSettlementStarted(roundId, block.timestamp);
        }
    }

    /// @notice Round manager: burn `slashPpm` of `account`'s current stake for its slashable verdict `status` in
    ///         `roundId`, once per (round, identity). The round manager decides which statuses are slashable.
    function slash(address account, uint256 roundId, uint8 status) external onlyRole(SLASHER_ROLE) returns (uint256) {
        if (_participants[account].status == Status.None) revert RegistryNotRegistered(account);
        uint256 bit = 1 << (roundId & 255);
        mapping(uint256 => uint256) storage bits = _slashedBits[account];
        if (bits[roundId >> 8] & bit != 0) revert RegistryAlreadySlashed(account, roundId);
        bits[roundId >> 8] |= bit;
        Stake storage s = _stakes[account];
        uint256 before = s.amount;
        uint256 amount = (before * slashPpm) / PPM_ONE; // before < 2**128, slashPpm <= 1e6: no overflow
        s.amount = uint128(before - amount);
        s.slashed += uint128(amount);
        _totalStaked -= amount;
        _totalBurned += amount;
        emit StakeSlashed(account, roundId, status, before, amount);
        return amount;
    }

    /// @notice Suspend a participant: it can no longer commit updates. `reason` is a short code.
    function suspend(address account, bytes32 reason) external onlyRole(OPERATOR_ROLE) {
        Participant storage p = _participants[account];
        if (p.status == Status.None) revert RegistryNotRegistered(account);
        if (p.status == Status.Suspended) revert RegistryAlreadySuspended(account);
        p.status = Status.Suspended;
        emit ParticipantSuspended(account, msg.sender, reason);
    }

    /// @notice Lift a suspension.
    function reinstate(address account) external onlyRole(OPERATOR_ROLE) {
        Participant storage p = _participants[account];
        if (p.status != Status.Suspended) revert RegistryNotSuspended(account, p.status);
        p.status = Status.Active;
        emit ParticipantReinstated(account, msg.sender);
    }

    /// @notice Record a participant's reputation after round `roundId`, which must be newer than the round of the
    ///         value it replaces.
    function setReputation(address account, uint256 roundId, uint32 value) external onlyRole(REPUTATION_WRITER_ROLE) {
        Participant storage p = _participants[account];
        if (p.status == Status.None) revert RegistryNotRegistered(account);
        if (value > REPUTATION_ONE) revert RegistryReputationOutOfRange(account, value);
        if (roundId <= p.reputationRound) revert RegistryStaleReputation(account, roundId, p.reputationRound);
        uint32 previous = p.reputation;
        p.reputation = value;
        p.reputationRound = uint64(roundId); // round ids count up from 1 by one: they never reach 2**64
        emit ReputationUpdated(account, roundId, previous, value);
    }

    function isActive(address account) external view returns (bool) {
        // An enum compared with a constant: slither's incorrect-equality taints it through `registerFor`'s
        // timestamp check, but no balance or time is compared here.
        // slither-disable-next-line incorrect-equality,timestamp
        return _participants[account].status == Status.Active;
    }

    function statusOf(address account) external view returns (Status) {
        return _participants[account].status;
    }

    function reputationOf(address account) external view returns (uint32) {
        return _participants[account].reputation;
    }

    /// @notice The round whose result set `account`'s reputation (0 while it is the initial value).
    function reputationRoundOf(address account) external view returns (uint256) {
        return _participants[account].reputationRound;
    }

    function participantOf(address account) external view returns (Participant memory) {
        return _participants[account];
    }

    function stakeOf(address account) external view returns (Stake memory) {
        return _stakes[account];
    }

    /// @notice Whether `account` could commit by transaction now: Active, no withdrawal pending, stake >= minStake.
    function canCommit(address account) external view returns (bool) {
        Stake storage s = _stakes[account];
        // An enum compared with a constant and a stake with a parameter: no timestamp is involved.
        // slither-disable-next-line incorrect-equality,timestamp
        return _participants[account].status == Status.Active && s.withdrawalRequestedAt == 0 && s.amount >= minStake;
    }

    function isSlashed(address account, uint256 roundId) external view returns (bool) {
        return _slashedBits[account][roundId >> 8] & (1 << (roundId & 255)) != 0;
    }

    function finalizedAt(uint256 roundId) external view returns (uint256) {
        return _finalizedAt[roundId];
    }

    /// @notice Ether currently staked by all identities (excludes what was burned).
    function totalStaked() external view returns (uint256) {
        return _totalStaked;
    }

    /// @notice Ether burned by slashing; it stays in this contract forever.
    function totalBurned() external view returns (uint256) {
        return _totalBurned;
    }

    function participantCount() external view returns (uint256) {
        return _count;
    }
}
